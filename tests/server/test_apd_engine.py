"""APD through the real engine on both families (Dream with a Qwen2 verifier; LLaDA with a Qwen2-layout
verifier sharing its tokenizer): a plain single-sequence APD oracle, left-to-right limits, verifier
cache, ragged frontiers in a batch, the draft counters, and the startup checks of --draft-model."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from checkpoint_factory import make_dream_checkpoint
from server.fast_decoding_helpers import PROMPTS, make_engine, run, run_one_by_one
from vdiff.engine.decoding.apd import gumbel_noise
from vdiff.engine.llm_engine import LLMEngine
from vdiff.errors import VdiffValidationError
from vdiff.models.base import shift_logits
from vdiff.sampling_params import SamplingParams

GEN = 12
FULL_RECOMPUTE = 10_000
"""A KV window wider than any canvas: every step recomputes the dLLM from position 0 (APD's W=None)."""


@pytest.fixture(scope="module", params=["dream", "llada"])
def apd_engine(request: pytest.FixtureRequest) -> LLMEngine:
    """APD on each family: Dream (logit shift) with a Qwen2 verifier, LLaDA with a Qwen2-layout verifier
    that shares LLaDA's tokenizer."""
    dllm, verifier = {
        "dream": ("dream_checkpoint", "qwen2_ar_checkpoint"),
        "llada": ("llada_checkpoint", "llada_ar_checkpoint"),
    }[request.param]
    return make_engine(request.getfixturevalue(dllm), draft_model=str(request.getfixturevalue(verifier)))


@pytest.fixture(scope="module")
def one_layer_apd_engine(tmp_path_factory: pytest.TempPathFactory, qwen2_ar_checkpoint: Path) -> LLMEngine:
    dream = make_dream_checkpoint(tmp_path_factory.mktemp("dream-1layer"), n_layers=1)
    return make_engine(dream, draft_model=str(qwen2_ar_checkpoint))


def _apd(**changes) -> SamplingParams:
    base = {"max_tokens": GEN, "ignore_eos": True, "decoding": "apd"}
    return SamplingParams(**(base | changes))


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        x = torch.tensor([ids])
        logits = model(x, torch.arange(len(ids)).unsqueeze(0)).logits.float()
    return (shift_logits(logits) if model.logit_shift else logits)[0].clone()


def apd_oracle(
    engine: LLMEngine, prompt: list[int], *, weight: float, lookahead: int, temperature: float, seed: int
) -> list[int]:
    """APD as in the paper, one sequence, no caches: dLLM over canvas[:t+M], AR over prefix + draft."""
    dllm, verifier = engine.runner.model, engine._policy("apd").verifier.runner.model
    mask = engine.mask_token_id
    generator = torch.Generator().manual_seed(seed)
    canvas = list(prompt) + [mask] * GEN
    t = len(prompt)
    while t < len(canvas):
        right = min(t + lookahead, len(canvas))
        log_d = _logits(dllm, canvas[:right])[t:right]
        log_d[:, mask] = float("-inf")
        log_d = log_d.log_softmax(-1).clamp_min(-1e9)
        noise = gumbel_noise(right - t, log_d.shape[-1], generator, "cpu") if temperature > 0 else 0.0
        scale = temperature if temperature > 0 else 1.0
        draft = (log_d / scale + noise).argmax(-1)
        log_ar = _logits(verifier, canvas[:t] + draft.tolist())[t:right].log_softmax(-1).clamp_min(-1e9)
        mixture = weight * log_d + (1 - weight) * log_ar
        mixture[:, mask] = float("-inf")
        target = (mixture / scale + noise).argmax(-1)
        accepted = 1
        while accepted < right - t and target[accepted] == draft[accepted]:
            accepted += 1
        canvas[t : t + accepted] = draft[:accepted].tolist()
        t += accepted
    return canvas[len(prompt) :]


@pytest.mark.parametrize(
    ("weight", "lookahead", "temperature"), [(0.5, 4, 0.0), (0.7, 64, 0.0), (0.0, 5, 0.0), (0.6, 6, 0.9)]
)
def test_engine_apd_equals_the_paper_algorithm(apd_engine: LLMEngine, weight, lookahead, temperature) -> None:
    params = _apd(
        apd_mixture_weight=weight,
        apd_max_lookahead=lookahead,
        apd_kv_window=FULL_RECOMPUTE,
        temperature=temperature,
        seed=11,
    )
    for prompt in PROMPTS[:3]:
        got = run(apd_engine, [(prompt, params)])[0].token_ids
        expected = apd_oracle(
            apd_engine, prompt, weight=weight, lookahead=lookahead, temperature=temperature, seed=11
        )
        assert got == expected


def test_kv_window_is_exact_on_a_one_layer_dllm(one_layer_apd_engine: LLMEngine) -> None:
    """With one layer, cached keys depend only on their own (committed) tokens, so W=1 loses nothing."""
    for prompt in PROMPTS[:3]:
        windowed = run(one_layer_apd_engine, [(prompt, _apd(apd_mixture_weight=0.5, apd_kv_window=1))])[0]
        expected = apd_oracle(one_layer_apd_engine, prompt, weight=0.5, lookahead=64, temperature=0.0, seed=0)
        assert windowed.token_ids == expected


def test_mixture_one_lookahead_one_is_left_to_right_one_token_decoding(apd_engine: LLMEngine) -> None:
    dllm, mask = apd_engine.runner.model, apd_engine.mask_token_id
    for prompt in PROMPTS:
        canvas = list(prompt)
        for _ in range(GEN):
            logits = _logits(dllm, [*canvas, mask])[-1]
            logits[mask] = float("-inf")
            canvas.append(int(logits.argmax()))
        params = _apd(apd_mixture_weight=1.0, apd_max_lookahead=1, apd_kv_window=FULL_RECOMPUTE)
        result = run(apd_engine, [(prompt, params)])[0]
        assert result.token_ids == canvas[len(prompt) :]
        assert result.num_forwards == GEN


def test_verifier_kv_cache_cropped_to_the_accepted_prefix_is_exact(apd_engine: LLMEngine) -> None:
    verifier = apd_engine._policy("apd").verifier
    params = _apd(apd_mixture_weight=0.5, apd_max_lookahead=5)
    jobs = [(prompt, params) for prompt in PROMPTS]
    cached = run_one_by_one(apd_engine, jobs)
    verifier.supports_kv_cache = False
    try:
        uncached = run_one_by_one(apd_engine, jobs)
    finally:
        verifier.supports_kv_cache = True
    assert [r.token_ids for r in cached] == [r.token_ids for r in uncached]


def test_ragged_frontiers_batched_equal_unbatched(apd_engine: LLMEngine) -> None:
    policies = [
        _apd(apd_mixture_weight=0.5, apd_max_lookahead=3),
        _apd(apd_mixture_weight=0.9, apd_kv_window=2),
        _apd(apd_mixture_weight=0.3, apd_max_lookahead=7, apd_kv_window=4),
        _apd(apd_mixture_weight=1.0, apd_max_lookahead=2),
        _apd(apd_mixture_weight=0.6, temperature=0.8, seed=5),
        SamplingParams(max_tokens=GEN, ignore_eos=True, decoding="threshold", threshold=0.6, block_length=4),
        SamplingParams(max_tokens=GEN, ignore_eos=True, decoding="reference", remasking="low_confidence"),
    ]
    jobs = [(PROMPTS[i % len(PROMPTS)], params) for i, params in enumerate(policies)]
    alone = run_one_by_one(apd_engine, jobs)
    together = run(apd_engine, jobs, stagger_steps=1)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert all(len(r.token_ids) == GEN for r in together)


def test_apd_without_draft_model_is_a_400(dream_checkpoint: Path) -> None:
    engine = make_engine(dream_checkpoint)
    with pytest.raises(VdiffValidationError) as error:
        engine.add_request("r", PROMPTS[0], _apd())
    assert "--draft-model" in error.value.message


def test_tokenizer_mismatch_is_a_startup_error(llada_checkpoint: Path, qwen2_ar_checkpoint: Path) -> None:
    with pytest.raises(VdiffValidationError, match="does not share the tokenizer"):
        make_engine(llada_checkpoint, draft_model=str(qwen2_ar_checkpoint))


def test_diffusion_model_as_verifier_is_a_startup_error(dream_checkpoint: Path) -> None:
    with pytest.raises(VdiffValidationError, match="autoregressive"):
        make_engine(dream_checkpoint, draft_model=str(dream_checkpoint))


def test_transformers_fallback_verifier_matches_the_native_one(
    tmp_path: Path, qwen2_ar_checkpoint: Path, dream_checkpoint: Path
) -> None:
    """A non-native model_type loads through AutoModelForCausalLM: here the same weights as 'llama'."""
    import json
    import shutil

    llama = tmp_path / "llama-ar"
    shutil.copytree(qwen2_ar_checkpoint, llama)
    config = json.loads((llama / "config.json").read_text())
    config |= {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": True,
        "mlp_bias": False,
    }
    (llama / "config.json").write_text(json.dumps(config))
    fallback = make_engine(dream_checkpoint, draft_model=str(llama))
    assert not fallback._policy("apd").verifier.supports_kv_cache
    params = _apd(apd_mixture_weight=0.4, apd_max_lookahead=4)
    native_engine = make_engine(dream_checkpoint, draft_model=str(qwen2_ar_checkpoint))
    native = run_one_by_one(native_engine, [(p, params) for p in PROMPTS[:2]])
    via_transformers = run_one_by_one(fallback, [(p, params) for p in PROMPTS[:2]])
    assert [r.token_ids for r in via_transformers] == [r.token_ids for r in native]


def test_draft_counters_account_for_every_committed_token(
    dream_checkpoint: Path, qwen2_ar_checkpoint: Path
) -> None:
    """Every APD step commits its frontier token plus the accepted part of its draft, so over a run
    committed tokens = sequence-steps + accepted draft tokens; accepted <= drafted, and a draft's
    position i can only be accepted where position i - 1 was."""
    engine = make_engine(dream_checkpoint, draft_model=str(qwen2_ar_checkpoint))
    jobs = [
        (PROMPTS[0], _apd(apd_mixture_weight=0.5, apd_max_lookahead=4)),
        (PROMPTS[1], _apd(apd_mixture_weight=0.7, temperature=0.9, seed=3)),
        (PROMPTS[2], _apd(apd_mixture_weight=0.0)),  # the verifier alone: drafts mostly rejected
    ]
    run(engine, jobs)
    stats = engine.stats
    assert stats.num_committed_tokens == len(jobs) * GEN
    assert stats.num_committed_tokens == stats.num_denoising_steps + stats.num_spec_accepted_tokens
    assert 0 < stats.num_spec_drafts <= stats.num_denoising_steps
    assert stats.num_spec_accepted_tokens <= stats.num_spec_draft_tokens
    per_position = stats.num_spec_accepted_per_position
    assert sum(per_position) == stats.num_spec_accepted_tokens
    assert all(a >= b for a, b in itertools.pairwise(per_position))
    assert per_position[0] <= stats.num_spec_drafts


def test_mixture_weight_one_is_not_counted_as_a_draft(apd_engine: LLMEngine) -> None:
    before = (apd_engine.stats.num_spec_drafts, apd_engine.stats.num_denoising_steps)
    run(apd_engine, [(PROMPTS[0], _apd(apd_mixture_weight=1.0))])
    assert apd_engine.stats.num_spec_drafts == before[0]  # no verifier forward, nothing verified
    assert apd_engine.stats.num_denoising_steps > before[1]
