"""The Makefile's build / deploy / bundle targets exist, are documented and say clearly what is missing."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from deploy.support import REPO_ROOT

TARGETS = (
    "image-server",
    "image-operator",
    "install",
    "uninstall",
    "deploy",
    "undeploy",
    "bundle",
    "bundle-build",
    "catalog-build",
)


def make(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )


def test_help_lists_every_target() -> None:
    help_text = make("help").stdout
    for target in TARGETS:
        assert f"{target} " in help_text, target
    for section in ("Build", "Deployment", "Bundle"):
        assert section in help_text


def test_image_targets_explain_a_missing_container_engine() -> None:
    result = make("image-server", "CONTAINER_TOOL=")
    assert result.returncode != 0
    assert "no podman or docker found" in result.stderr


def test_deploy_sets_both_images() -> None:
    result = make("-n", "deploy", "IMG=quay.io/me/op:1.0", "SERVER_IMG=quay.io/me/srv:1.0", "KUBECTL=kubectl")
    assert result.returncode == 0, result.stderr
    assert (
        "hack/render_overlay.py config/default --img quay.io/me/op:1.0 --server-img quay.io/me/srv:1.0"
        in (result.stdout)
    )
    assert "kubectl apply -f -" in result.stdout
