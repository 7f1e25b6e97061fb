"""SDAR natively: the real checkpoint layout, logits against an independent block-causal reference written
from the published modeling_sdar.py, the exact prefix cache of finished blocks, and block decoding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from checkpoint_factory import make_sdar_checkpoint
from safetensors.torch import load_file
from vdiff.config import EngineConfig
from vdiff.engine.decoding.block_causal import BlockCausalPolicy, select_dynamic, transfer_schedule
from vdiff.engine.kv_cache import SequenceKV, pad_past
from vdiff.engine.llm_engine import LLMEngine
from vdiff.errors import VdiffValidationError
from vdiff.knobs import DECODING_POLICIES
from vdiff.models.loader import load_model
from vdiff.models.registry import get_family
from vdiff.models.sdar import SDARModel, sdar_block_size
from vdiff.sampling_params import SamplingParams
from vdiff.tokenizer import load_tokenizer

B = 4


@pytest.fixture(scope="module")
def sdar_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sdar_checkpoint(tmp_path_factory.mktemp("sdar-tiny"), sharded=True)


@pytest.fixture(scope="module")
def sdar_model(sdar_checkpoint: Path) -> SDARModel:
    loaded = load_model(EngineConfig(model=str(sdar_checkpoint), device="cpu", dtype="float32"))
    assert isinstance(loaded.model, SDARModel)
    return loaded.model


# ------------------------------------------------------------------------------------------ reference
def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([-x[..., x.shape[-1] // 2 :], x[..., : x.shape[-1] // 2]], dim=-1)


def reference_logits(checkpoint: Path, ids: list[int], block_size: int = B) -> torch.Tensor:
    """modeling_sdar.py's forward over one whole sequence (no padding, no cache), in plain torch:
    q/k per-head RMSNorm -> rotate-half RoPE -> SDPA under tril(ones(blocks)) repeated block_size times."""
    config = json.loads((checkpoint / "config.json").read_text())
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        weights.update(load_file(str(shard)))
    heads, kv_heads, head_dim = (
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
    )
    length = len(ids)
    num_blocks = -(-length // block_size)
    block_mask = torch.tril(torch.ones(num_blocks, num_blocks))
    mask = (
        block_mask.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)[:length, :length].bool()
    )
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.arange(length).float()[:, None] * inv_freq[None]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()

    x = weights["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(config["num_hidden_layers"]):
        w = {
            name.removeprefix(f"model.layers.{i}."): t
            for name, t in weights.items()
            if f"layers.{i}." in name
        }
        h = _rms(x, w["input_layernorm.weight"])
        q = _rms(
            (h @ w["self_attn.q_proj.weight"].T).view(length, heads, head_dim), w["self_attn.q_norm.weight"]
        )
        k = _rms(
            (h @ w["self_attn.k_proj.weight"].T).view(length, kv_heads, head_dim),
            w["self_attn.k_norm.weight"],
        )
        v = (h @ w["self_attn.v_proj.weight"].T).view(length, kv_heads, head_dim)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=0)
        v = v.repeat_interleave(heads // kv_heads, dim=0)
        scores = (q @ k.transpose(1, 2)) * head_dim**-0.5
        attended = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
        x = x + attended.transpose(0, 1).reshape(length, -1) @ w["self_attn.o_proj.weight"].T
        h = _rms(x, w["post_attention_layernorm.weight"])
        gate, up = h @ w["mlp.gate_proj.weight"].T, h @ w["mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ w["mlp.down_proj.weight"].T
    return _rms(x, weights["model.norm.weight"]) @ weights["lm_head.weight"].T


def _forward(model: SDARModel, rows: list[list[int]], past=None, starts=None, use_cache=False):
    """Right-padded batch of query rows (row r at positions starts[r]..), optional per-row past."""
    starts = starts or [0] * len(rows)
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.int64)
    positions = torch.zeros(len(rows), width, dtype=torch.int64)
    past_kv, past_mask = pad_past(past) if past is not None else (None, None)
    num_cached = 0 if past_mask is None else past_mask.shape[1]
    key_mask = torch.zeros(len(rows), num_cached + width, dtype=torch.bool)
    if past_mask is not None:
        key_mask[:, :num_cached] = past_mask
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        positions[r, : len(row)] = torch.arange(starts[r], starts[r] + len(row))
        key_mask[r, num_cached : num_cached + len(row)] = True
    with torch.inference_mode():
        return model(ids, positions, key_mask, past_kv, use_cache=use_cache)


PROMPT_A = [5, 17, 99, 3, 250, 41, 77, 8, 12, 190, 66]  # 11 tokens: two full blocks and a partial one
PROMPT_B = [200, 7, 31, 9, 144, 2, 58]  # 7 tokens


# ------------------------------------------------------------------------------------------ loading
def test_real_layout_loads_as_the_sdar_family(sdar_checkpoint: Path, sdar_model: SDARModel) -> None:
    config = json.loads((sdar_checkpoint / "config.json").read_text())
    assert config["model_type"] == "sdar" and "block_size" not in config and "mask_token_id" not in config
    assert (sdar_checkpoint / "model.safetensors.index.json").exists()
    family = get_family("sdar")
    assert family.block_causal and family.decoding == "block" and family.block_length == B
    assert sdar_model.block_size == B and not sdar_model.logit_shift and sdar_model.supports_kv_cache
    tokenizer = load_tokenizer(sdar_checkpoint, family, hf_config=config)
    vocab = tokenizer.tokenizer.get_vocab()
    assert tokenizer.mask_token_id == vocab["<|MASK|>"]
    assert tokenizer.eos_token_ids[:2] == [vocab["<|im_end|>"], vocab["<|endoftext|>"]]


def test_block_size_and_mask_id_sources(tmp_path: Path) -> None:
    assert sdar_block_size({}) == 4
    assert sdar_block_size({"block_size": 8}, "JetLM/SDAR-4B-Chat-b64") == 8
    assert sdar_block_size({}, "JetLM/SDAR-4B-Chat-b16") == 16
    assert sdar_block_size({}, "/models/SDAR-8B-Chat-b32/") == 32
    assert sdar_block_size({"_name_or_path": "JetLM/SDAR-1.7B-Chat-b8"}) == 8
    assert sdar_block_size({}, "JetLM/SDAR-4B-Chat") == 4  # "-4B" is a size, not a block
    family = get_family("sdar")
    assert family.for_checkpoint({}, "JetLM/SDAR-4B-Chat-b16").block_length == 16
    named = make_sdar_checkpoint(tmp_path / "SDAR-tiny-Chat-b16", n_layers=1, with_mask_token_id=True)
    config = json.loads((named / "config.json").read_text())
    resolved = family.for_checkpoint(config, str(named))
    with torch.device("meta"):
        model = resolved.build(config)
    assert resolved.block_length == 16 and model.block_size == 16
    assert model.mask_token_id == load_tokenizer(named, family, hf_config=config).mask_token_id


# ------------------------------------------------------------------------------------------ numerics
def test_logits_match_the_reference_in_a_padded_batch(sdar_checkpoint: Path, sdar_model: SDARModel) -> None:
    logits = _forward(sdar_model, [PROMPT_A, PROMPT_B]).logits
    for row, prompt in enumerate([PROMPT_A, PROMPT_B]):
        expected = reference_logits(sdar_checkpoint, prompt)
        torch.testing.assert_close(logits[row, : len(prompt)], expected, atol=1e-4, rtol=1e-4)


def test_a_cache_of_finished_blocks_is_exact(sdar_model: SDARModel) -> None:
    """Rows with 2 and 1 cached blocks (padded to the same past), then their current block as queries."""
    full = _forward(sdar_model, [PROMPT_A, PROMPT_B]).logits
    prefixes = [PROMPT_A[: 2 * B], PROMPT_B[:B]]
    cached = _forward(sdar_model, prefixes, use_cache=True)
    past = [SequenceKV.from_batch(cached.past_key_values, row, 0, len(p)) for row, p in enumerate(prefixes)]
    rest = [PROMPT_A[2 * B :], PROMPT_B[B:]]
    step = _forward(sdar_model, rest, past=past, starts=[2 * B, B]).logits
    torch.testing.assert_close(step[0, :3], full[0, 2 * B : 11], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[1, :3], full[1, B:7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached.logits[0, : 2 * B], full[0, : 2 * B], atol=1e-5, rtol=1e-5)


def test_a_block_never_sees_a_later_block_but_sees_all_of_its_own(sdar_model: SDARModel) -> None:
    changed = list(PROMPT_A)
    changed[9] = 123  # block 2
    before, after = _forward(sdar_model, [PROMPT_A, changed]).logits
    torch.testing.assert_close(before[: 2 * B], after[: 2 * B], atol=0, rtol=0)
    assert not torch.allclose(before[2 * B : 9], after[2 * B : 9])  # bidirectional inside block 2
    changed = list(PROMPT_A)
    changed[4] = 123  # block 1: blocks 1 and 2 change, block 0 does not
    before, after = _forward(sdar_model, [PROMPT_A, changed]).logits
    torch.testing.assert_close(before[:B], after[:B], atol=0, rtol=0)
    assert not torch.allclose(before[B + 1 : 2 * B], after[B + 1 : 2 * B]) and not torch.allclose(
        before[2 * B :], after[2 * B :]
    )


# ------------------------------------------------------------------------------------------ decoding
GEN = 16
JOBS = [[5, 6, 7, 8], [40, 41], [100, 3, 9, 27, 31, 77, 12], [200, 201, 202, 17, 18, 19, 20, 21, 22]]


def select_reference(
    confidence: list[float], masks: list[int], num_transfer: int, threshold: float
) -> list[int]:
    above = [i for i in masks if confidence[i] > threshold]
    if len(above) >= num_transfer:
        return above
    return sorted(masks, key=lambda i: -confidence[i])[:num_transfer]


def oracle_generate(checkpoint: Path, prompt: list[int], mask_id: int, threshold: float) -> list[int]:
    """SDAR's block_diffusion_generate at temperature 0 without any cache: every step recomputes the
    whole sequence up to the current block with the reference forward. One step schedule per block
    (steps = B: one token per step unless enough masks clear the threshold).

    The layout is JetAstra/SDAR generate.py's: blocks at absolute multiples of B, the canvas is
    prompt + gen_length rounded up to a multiple of B from position 0 (num_blocks = ceil((P + G) / B)),
    and decoding starts at block P // B, so a partial prompt block is completed first (a shorter first
    generated block) and the last block is a whole one."""
    x = prompt + [mask_id] * (-(-(len(prompt) + GEN) // B) * B - len(prompt))
    for block_start in range(len(prompt) // B * B, len(x), B):
        block = range(block_start, min(block_start + B, len(x)))
        step = 0
        while masks := [i for i in block if x[i] == mask_id]:
            probs = torch.softmax(reference_logits(checkpoint, x[: block[-1] + 1]), dim=-1)
            confidence, tokens = probs.max(dim=-1)
            for i in select_reference(confidence.tolist(), masks, min(1, len(masks)), threshold):
                x[i] = int(tokens[i])
            step += 1
    return x[len(prompt) : len(prompt) + GEN]


def run_block(engine, jobs: list[tuple[list[int], SamplingParams]], stagger: int = 0) -> list:
    """Run jobs with decoding 'block' (through SamplingParams once the knob schema lists it; until then
    the request is admitted as threshold and its resolved params switched to 'block')."""
    results, pending, step = {}, list(enumerate(jobs)), 0
    while pending or engine.has_unfinished_requests():
        while pending and step >= stagger * pending[0][0]:
            index, (prompt, params) = pending.pop(0)
            if "block" in DECODING_POLICIES:
                engine.add_request(f"job-{index}", prompt, dataclasses.replace(params, decoding="block"))
            else:
                request = engine.process_request(prompt, params, f"job-{index}")
                resolved = request.params.resolved(decoding="block")
                engine._policies["block"].validate(resolved, "sdar")
                engine.add_processed(dataclasses.replace(request, params=resolved))
        for output in engine.step():
            if output.finished:
                results[output.request_id] = output
        step += 1
    return [results[f"job-{i}"] for i in range(len(jobs))]


def _params(**changes) -> SamplingParams:
    return SamplingParams(**({"max_tokens": GEN, "ignore_eos": True, "temperature": 0.0} | changes))


@pytest.fixture(scope="module")
def sdar_engine(sdar_checkpoint: Path) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(sdar_checkpoint), device="cpu"))


def test_select_dynamic_is_sdars_low_confidence_dynamic() -> None:
    confidence = torch.tensor([[0.95, 0.2, 0.91, 0.5], [0.95, 0.2, 0.3, 0.5], [0.1, 0.99, 0.3, 0.0]])
    candidates = torch.tensor([[True] * 4, [True] * 4, [True, False, True, False]])
    chosen = select_dynamic(confidence, candidates, torch.tensor([2, 2, 1]), torch.tensor([0.9, 0.9, 0.9]))
    assert chosen.tolist() == [
        [True, False, True, False],  # two above the threshold >= n_step: commit both
        [True, False, False, True],  # one above < n_step 2: the two most confident
        [False, False, True, False],  # the confident position is not a mask of the block
    ]
    assert transfer_schedule(4, 4) == [1, 1, 1, 1] and transfer_schedule(4, 3) == [2, 1, 1]


@pytest.mark.parametrize("threshold", [1.0, 0.6])
def test_block_decoding_equals_sdar_generate_recomputed_without_cache(
    sdar_checkpoint: Path, sdar_engine: LLMEngine, threshold: float
) -> None:
    """The whole batch at once (prompts of 4, 2, 7 and 9 tokens: aligned and partial first blocks)."""
    results = run_block(sdar_engine, [(prompt, _params(threshold=threshold)) for prompt in JOBS])
    mask_id = sdar_engine.mask_token_id
    for prompt, result in zip(JOBS, results, strict=True):
        assert list(result.outputs[0].token_ids) == oracle_generate(
            sdar_checkpoint, prompt, mask_id, threshold
        )
    if threshold == 1.0:  # one token per forward, no extra forward to cache a finished block; the answer
        # ends once its GEN tokens are committed, possibly before the aligned canvas's last block is full
        for prompt, result in zip(JOBS, results, strict=True):
            canvas = -(-(len(prompt) + GEN) // B) * B - len(prompt)
            assert GEN <= result.stats.num_forwards <= canvas
            assert len(prompt) % B or result.stats.num_forwards == GEN


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_block_decoding_does_not_depend_on_batching(sdar_engine: LLMEngine, temperature: float) -> None:
    jobs = [(prompt, _params(threshold=0.5, temperature=temperature, seed=7)) for prompt in JOBS]
    alone = [run_block(sdar_engine, [job])[0].outputs[0].token_ids for job in jobs]
    together = [result.outputs[0].token_ids for result in run_block(sdar_engine, jobs, stagger=2)]
    assert together == alone
    assert all(len(tokens) == GEN for tokens in alone)


def test_block_decoding_stops_at_an_end_token_and_uses_few_forwards(sdar_engine: LLMEngine) -> None:
    results = run_block(sdar_engine, [(prompt, _params(threshold=0.3, ignore_eos=False)) for prompt in JOBS])
    assert sum(result.stats.num_forwards for result in results) < GEN * len(JOBS)
    assert all(result.outputs[0].finish_reason in ("stop", "length") for result in results)


def test_block_policy_refuses_what_it_cannot_serve(sdar_engine: LLMEngine) -> None:
    policy = sdar_engine._policies["block"]
    resolved = sdar_engine.process_request([1, 2], _params()).params
    with pytest.raises(VdiffValidationError, match="cfg_scale"):
        policy.validate(resolved.resolved(cfg_scale=1.0), "sdar")
    with pytest.raises(VdiffValidationError, match="kv_cache"):
        policy.validate(resolved.resolved(kv_cache="prefix"), "sdar")
    bidirectional = BlockCausalPolicy(
        dataclasses.replace(policy.context, runner=SimpleNamespace(model=SimpleNamespace()))
    )
    with pytest.raises(VdiffValidationError, match="block-diffusion"):
        bidirectional.validate(resolved, "llada")


def test_a_preempted_sequence_rebuilds_its_cache_exactly(sdar_engine: LLMEngine) -> None:
    """Preemption drops the policy state but keeps the canvas: the next step re-prefills every finished
    block in one forward and the answer is unchanged."""
    job = (JOBS[2], _params(threshold=0.6))
    expected = run_block(sdar_engine, [job])[0].outputs[0].token_ids
    original_step, calls = sdar_engine.step, {"n": 0}

    def step_with_reset():
        calls["n"] += 1
        if calls["n"] in (3, 6):
            for request in sdar_engine.requests.values():
                for seq in request.seqs:
                    sdar_engine._reset_caches(seq)
        return original_step()

    sdar_engine.step = step_with_reset
    try:
        assert run_block(sdar_engine, [job])[0].outputs[0].token_ids == expected
    finally:
        del sdar_engine.step
    assert calls["n"] > 6


def test_a_long_prompt_is_prefilled_in_chunks_within_the_step_budget(
    sdar_checkpoint: Path, sdar_engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-num-batched-tokens below the prompt: its blocks go into the cache a chunk per step, and the
    answer is the one of an unchunked prefill (the cache of finished blocks is exact)."""
    prompt = [(7 * i) % 50 + 3 for i in range(10 * B + 1)]
    expected = run_block(sdar_engine, [(prompt, _params())])[0].outputs[0].token_ids
    budget = 3 * B
    chunked = LLMEngine(EngineConfig(model=str(sdar_checkpoint), device="cpu", max_num_batched_tokens=budget))
    sizes: list[int] = []
    execute = chunked.runner.execute

    def recording_execute(requests):
        sizes.append(sum(request.num_rows * request.num_queries for request in requests))
        return execute(requests)

    monkeypatch.setattr(chunked.runner, "execute", recording_execute)
    assert run_block(chunked, [(prompt, _params())])[0].outputs[0].token_ids == expected
    assert max(sizes) <= budget and len(sizes) > GEN  # the prefill took steps of its own
