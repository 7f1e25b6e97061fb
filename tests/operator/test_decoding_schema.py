"""The operator's decoding profiles and spec.decoding fields agree with the server's one knob schema.

The operator image does not ship the server (no torch), so it cannot import vdiff.knobs; this test is the
bridge: every profile value passes the server's own check, every flag the operator emits is parsed by
the real `vdiff serve` parser, and every spec.decoding field has the knob's choices and lower bound.
"""

from __future__ import annotations

import typing

import annotated_types
import pytest
from vdiff.config import EngineConfig
from vdiff.entrypoints.cli_args import make_arg_parser, resolve_serve_args
from vdiff.knobs import KNOBS_BY_NAME, SERVER_KNOBS
from vdiff_operator.builders.args import FAST_WITH_DRAFT, PROFILES, model_args
from vdiff_operator.models import ApdSettings, Decoding, DiffusionModel

SPEC_TO_KNOB = {
    (Decoding, "decoding"): "decoding",
    (Decoding, "steps"): "steps",
    (Decoding, "block_length"): "block_length",
    (Decoding, "threshold"): "threshold",
    (Decoding, "kv_cache"): "kv_cache",
    (Decoding, "kv_cache_vicinity"): "kv_cache_vicinity",
    (Decoding, "remasking"): "remasking",
    (Decoding, "dream_alg"): "alg",
    (ApdSettings, "mixture_weight"): "apd_mixture_weight",
    (ApdSettings, "kv_window"): "apd_kv_window",
    (ApdSettings, "max_lookahead"): "apd_max_lookahead",
}


@pytest.mark.parametrize("settings", [*PROFILES.values(), FAST_WITH_DRAFT], ids=str)
def test_every_profile_value_passes_the_servers_check(settings: dict) -> None:
    for flag, value in settings.items():
        knob = SERVER_KNOBS[flag]
        assert knob.check(value, knob.flag_name) == value


def test_every_decoding_field_of_the_spec_is_a_knob_with_its_choices_and_bound() -> None:
    fields = {(owner, name) for owner in (Decoding, ApdSettings) for name in owner.model_fields}
    assert fields - {(Decoding, "profile"), (Decoding, "apd")} == set(SPEC_TO_KNOB)
    for (owner, name), knob_name in SPEC_TO_KNOB.items():
        knob, info = KNOBS_BY_NAME[knob_name], owner.model_fields[name]
        literal = [
            arg for arg in typing.get_args(info.annotation) if typing.get_origin(arg) is typing.Literal
        ]
        if knob.choices:
            assert literal and set(typing.get_args(literal[0])) == set(knob.choices), name
            continue
        lower = {type(m): m for m in info.metadata}
        if knob.low_open:
            assert lower[annotated_types.Gt].gt == knob.low, name
        else:
            assert lower[annotated_types.Ge].ge == knob.low, name
        if knob.high is not None:
            assert lower[annotated_types.Le].le <= knob.high, name


def test_the_flags_the_operator_emits_are_accepted_by_vdiff_serve() -> None:
    dm = DiffusionModel.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
            "spec": {
                "model": {"uri": "hf://org/model"},
                "draftModel": {"uri": "hf://org/draft"},
                "decoding": {
                    "profile": "fast",
                    "steps": 64,
                    "blockLength": 32,
                    "kvCache": "dual",
                    "kvCacheVicinity": 8,
                    "remasking": "random",
                    "dreamAlg": "entropy",
                    "apd": {"mixtureWeight": 0.5, "kvWindow": 8, "maxLookahead": 32},
                },
            },
        }
    )
    args = resolve_serve_args(make_arg_parser(), ["--model=org/model", *model_args(dm)], environ={})
    config = EngineConfig(**args.engine_kwargs())
    assert (config.decoding, config.apd_mixture_weight, config.diffusion_steps) == ("apd", 0.5, 64)


PROFILE_WITH_DRAFT = {"fast": "apd", "balanced": "threshold", "quality": "reference"}


@pytest.mark.parametrize("draft", [None, "hf://org/draft", "pvc://drafts/qwen"])
@pytest.mark.parametrize("profile", ["quality", "balanced", "fast"])
def test_every_profile_with_and_without_a_draft_model_starts_the_server(
    profile: str, draft: str | None
) -> None:
    """fast + draftModel -> APD by default; balanced/quality + draftModel -> the profile's policy by default
    with the verifier loaded (--draft-model beside --decoding threshold|reference): requests may pick apd."""
    spec: dict = {"model": {"uri": "hf://org/model"}, "decoding": {"profile": profile}}
    if draft:
        spec["draftModel"] = {"uri": draft}
    dm = DiffusionModel.from_body({"metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": spec})
    from vdiff_operator.builders.servingruntime import BASE_ARGS

    argv = [*BASE_ARGS, *model_args(dm)]
    args = resolve_serve_args(make_arg_parser(), argv, environ={})
    config = EngineConfig(**args.engine_kwargs())
    expected = PROFILE_WITH_DRAFT[profile] if draft else PROFILES[profile]["decoding"]
    assert config.decoding == expected
    assert bool(config.draft_model) == bool(draft)


def test_the_drain_period_is_the_servers_and_the_pod_outlives_it() -> None:
    from vdiff.entrypoints.api_server import EXTRA_SHUTDOWN_S
    from vdiff_operator.builders import build_inference_service, build_serving_runtime
    from vdiff_operator.builders.common import DRAIN_SECONDS, SERVER_EXTRA_SHUTDOWN_SECONDS

    assert SERVER_EXTRA_SHUTDOWN_SECONDS == EXTRA_SHUTDOWN_S
    dm = DiffusionModel.from_body(
        {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": {"model": {"uri": "hf://o/m"}}}
    )
    runtime_args = build_serving_runtime(dm, "img")["spec"]["containers"][0]["args"]
    args = resolve_serve_args(make_arg_parser(), [*runtime_args, *model_args(dm)], environ={})
    from vdiff.entrypoints.frontend_args import FrontendArgs

    frontend = FrontendArgs(**args.frontend_kwargs())
    assert frontend.shutdown_grace_period == DRAIN_SECONDS
    grace = build_inference_service(dm)["spec"]["predictor"]["terminationGracePeriodSeconds"]
    assert grace > frontend.shutdown_grace_period + EXTRA_SHUTDOWN_S
