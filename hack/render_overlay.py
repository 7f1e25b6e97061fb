#!/usr/bin/env python3
"""Render a kustomization with the operator and server images set, without editing config/.

`make deploy` and `make bundle` both go through here: a throw-away overlay over the given base sets
the `controller` image (operator) and the RELATED_IMAGE_VDIFF_SERVER env of the operator Deployment.

    python hack/render_overlay.py config/default --img quay.io/x/vdiff-operator:0.2.0 \
        --server-img quay.io/x/vdiff-server:0.2.0 > deploy.yaml
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
OPERATOR_CONTAINER = "operator"
SERVER_IMAGE_ENV = "RELATED_IMAGE_VDIFF_SERVER"
OPERATOR_DEPLOYMENT_SELECTOR = "app.kubernetes.io/name=vdiff-operator,app.kubernetes.io/component=operator"


def kustomize_command() -> list[str]:
    """`kustomize build` when the standalone binary exists, else kubectl's built-in kustomize."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("oc"):
        return ["oc", "kustomize"]
    raise RuntimeError("no kustomize found: install kustomize, kubectl (>= 1.27) or oc")


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*kustomize_command(), str(directory)], check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """'repo/name:tag' or 'repo/name@sha256:...' -> (name, tag, digest); a registry port is not a tag."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, None, digest
    last_slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > last_slash:
        return image[:colon], image[colon + 1 :], None
    return image, None, None


def default_operator_image_name() -> str:
    """The name config/manager already maps the `controller` placeholder to (operator-sdk convention)."""
    manager = yaml.safe_load((REPO_ROOT / "config" / "manager" / "kustomization.yaml").read_text())
    for entry in manager.get("images", []):
        if entry["name"] == "controller":
            return entry.get("newName", "controller")
    return "controller"


def image_entries(img: str) -> list[dict[str, str]]:
    name, tag, digest = split_image(img)
    entries = []
    for placeholder in dict.fromkeys(["controller", default_operator_image_name()]):
        entry = {"name": placeholder, "newName": name}
        if digest:
            entry["digest"] = digest
        elif tag:
            entry["newTag"] = tag
        entries.append(entry)
    return entries


def overlay_kustomization(base: str, img: str, server_img: str) -> dict[str, Any]:
    env_patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "not-used-target-selects"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": OPERATOR_CONTAINER, "env": [{"name": SERVER_IMAGE_ENV, "value": server_img}]}
                    ]
                }
            }
        },
    }
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "images": image_entries(img),
        "patches": [
            {
                "patch": yaml.safe_dump(env_patch, sort_keys=False),
                "target": {"kind": "Deployment", "labelSelector": OPERATOR_DEPLOYMENT_SELECTOR},
            }
        ],
    }


def render(base: Path, img: str, server_img: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="vdiff-overlay-") as tmp:
        overlay = Path(tmp)
        # kustomize refuses absolute resource paths; a relative one may leave the overlay's root.
        relative_base = os.path.relpath(base.resolve(), overlay)
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump(overlay_kustomization(relative_base, img, server_img), sort_keys=False)
        )
        return kustomize_build(overlay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", type=Path, help="kustomization directory, e.g. config/default")
    parser.add_argument("--img", required=True, help="operator image")
    parser.add_argument("--server-img", required=True, help="vdiff server image")
    args = parser.parse_args(argv)
    documents = render(args.base, args.img, args.server_img)
    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
