"""Upstream-schema checks may skip on a workstation without ../shared, never in CI."""

from __future__ import annotations

import crd_schemas
import pytest

RUNTIME = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime"}


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_shared_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path, ci, outcome) -> None:
    monkeypatch.setattr(crd_schemas, "UPSTREAM_CRDS", tmp_path / "absent")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="not found under"):
        crd_schemas.upstream_crd_path(RUNTIME)
