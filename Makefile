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

$(VENV)/.installed: server/pyproject.toml operator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" -e "server[test,bench]" -e "operator[test]"
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the local virtualenv with both packages and test extras

.PHONY: test
test: venv ## Run the test suite (fast tests; add PYTEST_ARGS="-m slow" for the slow ones)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## Lint with ruff
	$(VENV)/bin/ruff check server operator tests bench
	$(VENV)/bin/ruff format --check server operator tests bench

.PHONY: serve
serve: venv ## Serve the built-in demo model on http://localhost:8000
	$(VENV)/bin/vdiff serve $(SERVE_ARGS)
