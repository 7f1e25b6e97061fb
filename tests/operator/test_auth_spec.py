"""spec.auth.apiKeysSecretRef and spec.rateLimits: the CRD and the model accept and reject the same
objects, the Secret is mounted (never read by the operator) and passed as --api-key-file, the limits
become the server's flags, and every rendered object fits the upstream schemas."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from crd_schemas import REPO_ROOT, our_errors, validate_upstream
from pydantic import ValidationError
from vdiff_operator.builders import Platform, build_children
from vdiff_operator.builders.args import API_KEYS_MOUNT_PATH, model_args
from vdiff_operator.models import DiffusionModel

PLATFORMS = [Platform(), Platform.openshift(), Platform.openshift(rhoai=True)]


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vdiff.io/v1alpha1",
        "kind": "DiffusionModel",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {"model": {"uri": "hf://GSAI-ML/LLaDA-8B-Instruct"}, **spec},
    }


def predictor(obj: dict[str, Any], platform: Platform | None = None) -> dict[str, Any]:
    children = build_children(DiffusionModel.from_body(obj), platform or Platform())
    (isvc,) = [child for child in children if child["kind"] == "InferenceService"]
    return isvc["spec"]["predictor"]


def test_a_whole_secret_is_mounted_as_a_key_directory() -> None:
    spec = predictor(body(auth={"apiKeysSecretRef": {"name": "team-keys"}}))
    assert spec["volumes"] == [{"name": "api-keys", "secret": {"secretName": "team-keys"}}]
    mount = {"name": "api-keys", "mountPath": API_KEYS_MOUNT_PATH, "readOnly": True}
    assert spec["model"]["volumeMounts"] == [mount]
    assert "subPath" not in mount  # a subPath mount never sees the Secret rotate
    assert f"--api-key-file={API_KEYS_MOUNT_PATH}" in spec["model"]["args"]


def test_one_data_key_is_mounted_as_a_key_per_line_file() -> None:
    spec = predictor(body(auth={"apiKeysSecretRef": {"name": "team-keys", "key": "keys.txt"}}))
    secret = spec["volumes"][0]["secret"]
    assert secret == {"secretName": "team-keys", "items": [{"key": "keys.txt", "path": "api-keys"}]}
    assert f"--api-key-file={API_KEYS_MOUNT_PATH}/api-keys" in spec["model"]["args"]


def test_rate_limits_become_flags_before_the_users_args() -> None:
    obj = body(rateLimits={"requestsPerMinute": 60, "tokensPerMinute": 50000}, args=["--seed=7"])
    args = model_args(DiffusionModel.from_body(obj))
    assert args[-3:] == [
        "--rate-limit-requests-per-minute=60", "--rate-limit-tokens-per-minute=50000", "--seed=7",
    ]  # fmt: skip
    plain = model_args(DiffusionModel.from_body(body()))
    assert not [arg for arg in plain if arg.startswith(("--rate-limit", "--api-key-file"))]


def test_the_server_accepts_the_flags() -> None:
    cli_args = pytest.importorskip("vdiff.entrypoints.cli_args")
    obj = body(auth={"apiKeysSecretRef": {"name": "k"}}, rateLimits={"requestsPerMinute": 5})
    argv = ["model", *model_args(DiffusionModel.from_body(obj))]
    values = cli_args.resolve_serve_args(cli_args.make_arg_parser(), argv, {}).values
    assert values["api_key_file"] == API_KEYS_MOUNT_PATH
    assert values["rate_limit_requests_per_minute"] == 5 and values["rate_limit_tokens_per_minute"] is None


def test_beside_a_pvc_draft_and_the_env_key() -> None:
    obj = body(
        draftModel={"uri": "pvc://drafts/qwen"},
        decoding={"profile": "fast"},
        apiKeySecretRef={"name": "one-key"},
        auth={"apiKeysSecretRef": {"name": "team-keys"}},
    )
    spec = predictor(obj)
    assert [volume["name"] for volume in spec["volumes"]] == ["draft-model", "api-keys"]
    assert [mount["name"] for mount in spec["model"]["volumeMounts"]] == ["draft-model", "api-keys"]
    assert spec["model"]["env"][0]["name"] == "VDIFF_API_KEY"  # both kinds of keys work together


@pytest.mark.parametrize("platform", PLATFORMS, ids=["kubernetes", "openshift", "rhoai"])
def test_rendered_objects_fit_the_upstream_schemas(platform: Platform) -> None:
    obj = body(
        draftModel={"uri": "pvc://drafts/qwen"},
        auth={"apiKeysSecretRef": {"name": "team-keys", "key": "keys"}},
        rateLimits={"requestsPerMinute": 60, "tokensPerMinute": 1000},
    )
    for child in build_children(DiffusionModel.from_body(obj), platform):
        validate_upstream(child)


@pytest.mark.parametrize(
    "spec",
    [
        {"rateLimits": {"requestsPerMinute": 0}},
        {"rateLimits": {"tokensPerMinute": -1}},
        {"rateLimits": {"burst": 3}},
        {"auth": {"apiKeysSecretRef": {"key": "k"}}},
        {"auth": {"apiKeysSecretRef": {"name": ""}}},
        {"auth": {"apiKeysSecretRef": {"name": "s", "key": ""}}},
    ],
)
def test_crd_and_model_reject_the_same_objects(spec: dict[str, Any]) -> None:
    obj = body(**spec)
    assert our_errors(obj)
    with pytest.raises(ValidationError):
        DiffusionModel.from_body(obj)


def test_valid_objects_pass_both() -> None:
    obj = body(auth={"apiKeysSecretRef": {"name": "s"}}, rateLimits={"requestsPerMinute": 1})
    assert our_errors(obj) == []
    DiffusionModel.from_body(obj)


def test_the_operator_needs_no_secret_rights() -> None:
    role = yaml.safe_load((REPO_ROOT / "config/rbac/role.yaml").read_text())
    resources = {resource for rule in role["rules"] for resource in rule.get("resources", [])}
    assert "secrets" not in resources
