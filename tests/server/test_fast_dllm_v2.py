"""Fast-dLLM v2 natively: the real layout loads as its family, the forward equals an independent
implementation of the published math, and the `block` policy with its exact cache gives the tokens of
the published generate() recomputed without any cache (NVlabs' modeling.py, as mirrored in
Satgoy152/DualDiffusion:FastDLLM_inferencing/Fast_dLLM_v2_7B/modeling.py): blocks of bd_size at absolute
positions, the logits shifted by one (`cat(L[:, :1], L[:, :-1])`), a generated block's first token the
argmax of the finished block's last logit, then sub-blocks of 8 left to right, each step committing the
sub-block's masks with p > threshold and always its most confident one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from checkpoint_factory import make_fast_dllm_v2_checkpoint
from safetensors.torch import load_file
from vdiff.config import EngineConfig
from vdiff.engine.llm_engine import LLMEngine
from vdiff.models.fast_dllm_v2 import FastDLLMV2Model
from vdiff.models.loader import load_model
from vdiff.models.registry import get_family
from vdiff.sampling_params import SamplingParams

B, SUB, GEN = 16, 8, 32
PROMPTS = [list(range(3, 35)), [7 + (i * 13) % 200 for i in range(48)]]  # 2 and 3 full blocks


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fast_dllm_v2_checkpoint(tmp_path_factory.mktemp("fast-dllm-v2"), bd_size=B, sharded=True)


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(checkpoint), device="cpu"))


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([-x[..., x.shape[-1] // 2 :], x[..., : x.shape[-1] // 2]], dim=-1)


def reference_logits(checkpoint: Path, ids: list[int]) -> torch.Tensor:
    """modeling.py's eval forward over one sequence: Qwen2 attention (q/k/v bias), rotate-half RoPE,
    SDPA under eval_block_diff_mask (q_idx // B >= kv_idx // B), unshifted logits."""
    config = json.loads((checkpoint / "config.json").read_text())
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        weights.update(load_file(str(shard)))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, length = config["hidden_size"] // heads, len(ids)
    index = torch.arange(length)
    mask = index[:, None] // config["bd_size"] >= index[None, :] // config["bd_size"]
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = index.float()[:, None] * inv_freq[None]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x = weights["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(config["num_hidden_layers"]):
        w = {n.removeprefix(f"model.layers.{i}."): t for n, t in weights.items() if f"layers.{i}." in n}
        h = _rms(x, w["input_layernorm.weight"])

        def project(name: str, count: int, h: torch.Tensor = h, w: dict = w) -> torch.Tensor:
            out = h @ w[f"self_attn.{name}_proj.weight"].T + w[f"self_attn.{name}_proj.bias"]
            return out.view(length, count, head_dim).transpose(0, 1)

        q, k, v = project("q", heads), project("k", kv_heads), project("v", kv_heads)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        scores = (q @ k.transpose(1, 2)) * head_dim**-0.5
        attended = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
        x = x + attended.transpose(0, 1).reshape(length, -1) @ w["self_attn.o_proj.weight"].T
        h = _rms(x, w["post_attention_layernorm.weight"])
        x = (
            x
            + (F.silu(h @ w["mlp.gate_proj.weight"].T) * (h @ w["mlp.up_proj.weight"].T))
            @ w["mlp.down_proj.weight"].T
        )
    return _rms(x, weights["model.norm.weight"]) @ weights["lm_head.weight"].T


def published_generate(checkpoint: Path, prompt: list[int], mask_id: int, threshold: float) -> list[int]:
    """generate() at temperature 0, use_block_cache False, recomputing the whole prefix every step."""
    x = list(prompt)
    if len(prompt) % B == 0:  # else the prompt's partial block is the first (shorter) generated block
        x.append(int(reference_logits(checkpoint, x)[-1].argmax()))
    while len(x) - len(prompt) < GEN:
        block_start = len(x) // B * B
        x += [mask_id] * (block_start + B - len(x))
        for sub in range(block_start, block_start + B, SUB):
            while masks := [i for i in range(sub, sub + SUB) if x[i] == mask_id]:
                logits = reference_logits(checkpoint, x)
                shifted = torch.cat([logits[:1], logits[:-1]])
                confidence, tokens = torch.softmax(shifted, dim=-1).max(dim=-1)
                best = max(masks, key=lambda i: float(confidence[i]))
                for i in masks:
                    if i == best or float(confidence[i]) > threshold:
                        x[i] = int(tokens[i])
        x.append(int(reference_logits(checkpoint, x)[-1].argmax()))
    return x[len(prompt) : len(prompt) + GEN]


def _params(**changes) -> SamplingParams:
    return SamplingParams(**({"max_tokens": GEN, "ignore_eos": True, "temperature": 0.0} | changes))


def _run(engine: LLMEngine, jobs: list[tuple[list[int], SamplingParams]]) -> list[list[int]]:
    for index, (prompt, params) in enumerate(jobs):
        engine.add_request(f"job-{index}", prompt, params)
    results = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                results[output.request_id] = list(output.outputs[0].token_ids)
    return [results[f"job-{i}"] for i in range(len(jobs))]


def test_real_layout_loads_as_the_fast_dllm_v2_family(checkpoint: Path, engine: LLMEngine) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    family = get_family(config["model_type"]).for_checkpoint(config)
    assert (family.name, family.block_length, family.decoding) == ("fast_dllm_v2", B, "block")
    model = engine.loaded.model
    assert isinstance(model, FastDLLMV2Model) and model.logit_shift and model.block_size == B
    assert engine.mask_token_id == engine.tokenizer_info.tokenizer.convert_tokens_to_ids("|<MASK>|")
    assert config["vocab_size"] > len(engine.tokenizer_info.tokenizer)  # the head is wider, like the 7B


def test_forward_equals_the_published_math(checkpoint: Path) -> None:
    model = load_model(EngineConfig(model=str(checkpoint), device="cpu", dtype="float32")).model
    ids = PROMPTS[1][:41]  # two full blocks and a partial one
    with torch.inference_mode():
        ours = model(torch.tensor([ids]), torch.arange(len(ids))[None]).logits[0]
    torch.testing.assert_close(ours, reference_logits(checkpoint, ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("threshold", [1.0, 0.05])
def test_block_decoding_equals_published_generate_without_cache(
    checkpoint: Path, engine: LLMEngine, threshold: float
) -> None:
    """The cached engine, both prompts in one batch, against generate() recomputing every prefix."""
    results = _run(engine, [(prompt, _params(threshold=threshold)) for prompt in PROMPTS])
    for prompt, tokens in zip(PROMPTS, results, strict=True):
        assert tokens == published_generate(checkpoint, prompt, engine.mask_token_id, threshold)


def test_partial_prompt_blocks_are_absolute_like_published_generate(
    checkpoint: Path, engine: LLMEngine
) -> None:
    """Prompts of 21 and 43 tokens (not multiples of B) in one batch against generate().

    NVlabs/Fast-dLLM v2 `generate` (reference/block-diffusion.md) prefills only the prompt's full
    blocks, appends MASKs up to the next multiple of B (so the first generated block is B - P % B long),
    takes the next block's first token from the finished block's last logit, and stops once the
    sequence reaches prompt + max_new_tokens: the canvas ends at that length rounded up to a multiple
    of B from position 0, which is what plan_blocks(align_to_prompt_len=P) lays out."""
    prompts = [PROMPTS[0][:21], PROMPTS[1][:43]]
    results = _run(engine, [(prompt, _params(threshold=0.5)) for prompt in prompts])
    for prompt, tokens in zip(prompts, results, strict=True):
        assert tokens == published_generate(checkpoint, prompt, engine.mask_token_id, 0.5)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_block_decoding_does_not_depend_on_batching(engine: LLMEngine, temperature: float) -> None:
    prompts = [*PROMPTS, PROMPTS[1][:37]]  # the last one starts mid-block
    jobs = [(prompt, _params(threshold=0.3, temperature=temperature, seed=3)) for prompt in prompts]
    alone = [_run(engine, [job])[0] for job in jobs]
    assert _run(engine, jobs) == alone
    assert all(len(tokens) == GEN for tokens in alone)


def test_served_over_http_streamed_or_not(checkpoint: Path, engine: LLMEngine) -> None:
    """Real uvicorn on loopback and the openai client: the served text equals the offline engine's."""
    import openai
    from vdiff.entrypoints.frontend_args import FrontendArgs
    from vdiff.entrypoints.launcher import BackgroundServer

    config = EngineConfig(model=str(checkpoint), served_model_names=["tiny-fast-dllm-v2"])
    with BackgroundServer(config, FrontendArgs()) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        kwargs = {"model": "tiny-fast-dllm-v2", "prompt": PROMPTS[0], "max_tokens": GEN, "temperature": 0}
        whole = client.completions.create(**kwargs, extra_body={"ignore_eos": True})
        chunks = [
            c for c in client.completions.create(**kwargs, stream=True, extra_body={"ignore_eos": True})
        ]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    offline = _run(engine, [(PROMPTS[0], _params())])[0]
    assert whole.choices[0].text == engine.tokenizer_info.decode(offline)
