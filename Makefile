# vdiff — make help lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

##@ Development

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_.-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

# First run only: a few minutes, most of it downloading torch. Each step says what it installs.
$(VENV)/.installed: server/pyproject.toml operator/pyproject.toml
	@set -e; start=$$(date +%s); \
	echo "==> Setting up $(VENV) (first run only; usually 2-5 minutes, most of it downloading torch)"; \
	echo "==> [1/4] $(PYTHON) -m venv $(VENV)"; \
	$(PYTHON) -m venv $(VENV); \
	echo "==> [2/4] upgrading pip (seconds)"; \
	$(PY) -m pip install --quiet --upgrade pip; \
	echo "==> [3/4] torch $(TORCH_VERSION) (the big download: hundreds of MB, more on Linux with its CUDA libraries; 1-4 minutes)"; \
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	echo "==> [4/4] vdiff (server/) and vdiff-operator (operator/) in editable mode, with test and bench extras (about a minute)"; \
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" -e "server[test,bench]" -e "operator[test]"; \
	touch $@; \
	echo "==> $(VENV) ready in $$(( $$(date +%s) - start )) s: the commands are in $(VENV)/bin (vdiff, vdiff-operator); 'source $(VENV)/bin/activate' puts them on PATH"

.PHONY: venv
venv: $(VENV)/.installed ## Create the local virtualenv with both packages and test extras

# The browser test (tests/server/test_live_view.py) drives Debian's chromium through Playwright (pinned in the
# test extras); no browser is downloaded. As root (CI) a missing one is installed; otherwise the test skips,
# except under CI=true, where it fails.
CHROMIUM ?= /usr/bin/chromium

.PHONY: chromium
chromium: ## Install Debian's chromium + chromium-driver for the browser test when missing (root only)
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing chromium and chromium-driver (apt-get; a minute) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "==> $(CHROMIUM) is missing and this is not root: the browser test will skip (under CI=true, fail)"; \
	fi

.PHONY: test
test: venv chromium ## Run the test suite (fast tests; in CI, CI=true, the slow ones too)
	$(PY) -m pytest $(if $(CI),-m "slow or not slow",) $(PYTEST_ARGS)

.PHONY: test-all
test-all: venv chromium ## Run every test, the slow ones included (what CI runs)
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## Lint with ruff
	$(VENV)/bin/ruff check server operator tests bench
	$(VENV)/bin/ruff format --check server operator tests bench

.PHONY: serve
serve: venv ## Serve the built-in demo model on http://localhost:8000
	@echo "==> $(VENV)/bin/vdiff serve $(SERVE_ARGS) (no model: the built-in demo llada-demo; ready when 'Uvicorn running' shows, Ctrl-C stops)"
	$(VENV)/bin/vdiff serve $(SERVE_ARGS)

# ---- Images, deployment and the OLM bundle (config/, bundle/, Containerfile.*) ----
VERSION ?= 0.1.0
# OLM channels (operator-sdk conventions): alpha for previews, candidate for release candidates of stable.
CHANNELS ?= alpha,candidate
DEFAULT_CHANNEL ?= alpha
# CSV metadata.annotations.createdAt: set with VERSION when cutting a release (kept fixed so bundle/ is reproducible).
CREATED_AT ?= 2026-12-01T00:00:00Z
IMAGE_TAG_BASE ?= quay.io/vdiff/vdiff
IMG ?= $(IMAGE_TAG_BASE)-operator:$(VERSION)
SERVER_IMG ?= $(IMAGE_TAG_BASE)-server:$(VERSION)
BUNDLE_IMG ?= $(IMAGE_TAG_BASE)-operator-bundle:v$(VERSION)
CATALOG_IMG ?= $(IMAGE_TAG_BASE)-operator-catalog:v$(VERSION)
BUNDLE_GEN ?= builtin
CONTAINER_TOOL ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
KUBECTL ?= $(shell command -v oc 2>/dev/null || command -v kubectl 2>/dev/null)
comma := ,
HOST_PY ?= $(shell test -x $(PY) && echo $(PY) || echo $(PYTHON))

define require_container_tool
	@test -n "$(CONTAINER_TOOL)" || { echo "error: no podman or docker found; install one or set CONTAINER_TOOL=" >&2; exit 1; }
endef
define require_kubectl
	@test -n "$(KUBECTL)" || { echo "error: no oc or kubectl found; install one or set KUBECTL=" >&2; exit 1; }
endef

##@ Build

.PHONY: image-server
image-server: ## Build the vdiff server image (CUDA) as $(SERVER_IMG)
	$(require_container_tool)
	$(CONTAINER_TOOL) build -f Containerfile.server --build-arg VERSION=$(VERSION) -t $(SERVER_IMG) .

.PHONY: image-operator
image-operator: ## Build the operator image as $(IMG)
	$(require_container_tool)
	$(CONTAINER_TOOL) build -f Containerfile.operator --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: image-push
image-push: ## Push $(IMG) and $(SERVER_IMG)
	$(require_container_tool)
	$(CONTAINER_TOOL) push $(IMG)
	$(CONTAINER_TOOL) push $(SERVER_IMG)

##@ Deployment

.PHONY: install
install: ## Install the DiffusionModel CRD into the current cluster
	$(require_kubectl)
	$(KUBECTL) kustomize config/crd | $(KUBECTL) apply -f -

.PHONY: uninstall
uninstall: ## Remove the DiffusionModel CRD (and every DiffusionModel) from the current cluster
	$(require_kubectl)
	$(KUBECTL) kustomize config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: ## Deploy the operator (namespace vdiff-system) with IMG and SERVER_IMG
	$(require_kubectl)
	$(HOST_PY) hack/render_overlay.py config/default --img $(IMG) --server-img $(SERVER_IMG) | $(KUBECTL) apply -f -

.PHONY: deploy-applications-rbac
deploy-applications-rbac: ## Let the operator write the dashboard Template (Role in redhat-ods-applications; OpenShift AI)
	$(require_kubectl)
	$(KUBECTL) kustomize config/applications-rbac | $(KUBECTL) apply -f -

.PHONY: undeploy
undeploy: ## Remove the operator, its RBAC, namespace and the CRD
	$(require_kubectl)
	$(HOST_PY) hack/render_overlay.py config/default --img $(IMG) --server-img $(SERVER_IMG) | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: rhoai-template
rhoai-template: ## Regenerate config/rhoai (dashboard Template) from the operator's builder
	$(HOST_PY) hack/generate_rhoai_template.py

##@ Bundle

.PHONY: bundle
bundle: ## Generate bundle/ and bundle.Dockerfile from config/ (BUNDLE_GEN=operator-sdk to use operator-sdk)
ifeq ($(BUNDLE_GEN),operator-sdk)
	$(HOST_PY) hack/render_overlay.py config/manifests --img $(IMG) --server-img $(SERVER_IMG) \
		| operator-sdk generate bundle -q --overwrite --package vdiff-operator --version $(VERSION) --channels=$(CHANNELS) --default-channel=$(DEFAULT_CHANNEL)
else
	$(HOST_PY) hack/generate_bundle.py --version $(VERSION) --img $(IMG) --server-img $(SERVER_IMG) \
		--channels $(CHANNELS) --default-channel $(DEFAULT_CHANNEL) --created-at $(CREATED_AT)
endif
	@if command -v operator-sdk >/dev/null 2>&1; then operator-sdk bundle validate ./bundle --select-optional suite=operatorframework; \
	else echo "operator-sdk not found: bundle checked by tests/deploy (make test) instead of operator-sdk bundle validate"; fi

.PHONY: bundle-build
bundle-build: ## Build the bundle image $(BUNDLE_IMG)
	$(require_container_tool)
	$(CONTAINER_TOOL) build -f bundle.Dockerfile -t $(BUNDLE_IMG) .

.PHONY: bundle-push
bundle-push: ## Push the bundle image $(BUNDLE_IMG)
	$(require_container_tool)
	$(CONTAINER_TOOL) push $(BUNDLE_IMG)

.PHONY: catalog-build
catalog-build: ## Build a file-based catalog image $(CATALOG_IMG) holding $(BUNDLE_IMG) (needs opm; bundle pushed)
	@command -v opm >/dev/null 2>&1 || { echo "error: opm not found (https://github.com/operator-framework/operator-registry/releases)" >&2; exit 1; }
	$(require_container_tool)
	rm -rf build/catalog build/catalog.Dockerfile && mkdir -p build/catalog/vdiff-operator
	opm init vdiff-operator --default-channel=$(DEFAULT_CHANNEL) --output yaml > build/catalog/vdiff-operator/index.yaml
	opm render $(BUNDLE_IMG) --output yaml >> build/catalog/vdiff-operator/index.yaml
	for channel in $(subst $(comma), ,$(CHANNELS)); do \
		printf -- '---\nschema: olm.channel\npackage: vdiff-operator\nname: %s\nentries:\n  - name: vdiff-operator.v%s\n' \
			$$channel $(VERSION) >> build/catalog/vdiff-operator/index.yaml; \
	done
	opm validate build/catalog
	cd build && opm generate dockerfile catalog
	$(CONTAINER_TOOL) build -f build/catalog.Dockerfile -t $(CATALOG_IMG) build

.PHONY: catalog-push
catalog-push: ## Push the catalog image $(CATALOG_IMG)
	$(require_container_tool)
	$(CONTAINER_TOOL) push $(CATALOG_IMG)

##@ Benchmark

.PHONY: train-demo
train-demo: venv ## Retrain the shipped demo models on CPU (~50 min) and record their accuracy
	$(PY) -m bench.train_demo --out server/src/vdiff/demo_models $(TRAIN_ARGS)
	$(PY) -m bench.evaluate_demo

.PHONY: bench
bench: venv ## Accuracy vs speed of every decoding policy, engine + HTTP (BENCH_ARGS=--quick for a sample)
	$(PY) -m bench.run $(BENCH_ARGS)
