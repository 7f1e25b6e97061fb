"""LLaDA2.x and LLaDA-MoE natively: the MoE block against a naive per-token reference (softmax / sigmoid
scoring, group-limited top-k, the correction bias, norm_topk_prob, the scaling factor), padding invariance,
the whole model against an independent reference forward written from the published modeling files, the
exact cache of finished blocks and block decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from checkpoint_factory import make_llada2_checkpoint, make_llada_moe_checkpoint
from safetensors.torch import load_file
from vdiff.config import EngineConfig
from vdiff.engine.kv_cache import SequenceKV, pad_past
from vdiff.engine.llm_engine import LLMEngine
from vdiff.errors import VdiffValidationError
from vdiff.models.llada2 import LLaDA2Model, LLaDAMoEModel, llada2_block_size
from vdiff.models.loader import load_model
from vdiff.models.moe import RouterConfig, SparseMoeBlock
from vdiff.models.registry import get_family
from vdiff.sampling_params import SamplingParams
from vdiff.tokenizer import load_tokenizer

B = 8  # the decoding fixture's block (config.json block_size); the family default is 32


@pytest.fixture(scope="module")
def llada2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llada2_checkpoint(tmp_path_factory.mktemp("llada2-tiny"), sharded=True, block_size=B)


@pytest.fixture(scope="module")
def llada2_model(llada2_checkpoint: Path) -> LLaDA2Model:
    loaded = load_model(EngineConfig(model=str(llada2_checkpoint), device="cpu", dtype="float32"))
    assert isinstance(loaded.model, LLaDA2Model)
    return loaded.model


@pytest.fixture(scope="module")
def llada_moe_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llada_moe_checkpoint(tmp_path_factory.mktemp("llada-moe-tiny"))


# ------------------------------------------------------------------------------------------ reference
def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _swiglu(x: torch.Tensor, w: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    gate, up = x @ w[prefix + "gate_proj.weight"].T, x @ w[prefix + "up_proj.weight"].T
    return (F.silu(gate) * up) @ w[prefix + "down_proj.weight"].T


def naive_moe(
    x: torch.Tensor,
    w: dict[str, torch.Tensor],
    prefix: str,
    *,
    num_experts: int,
    top_k: int,
    score: str,
    n_group: int | None,
    topk_group: int | None,
    norm_topk_prob: bool,
    scale: float,
    bias_key: str | None,
    bias_in_weights: bool = False,
    shared_prefix: str | None = None,
) -> torch.Tensor:
    """One token at a time, one expert at a time, selection by Python sorting."""
    out = torch.zeros_like(x)
    per_group = num_experts // (n_group or 1)
    for t in range(x.shape[0]):
        logits = (w[prefix + "gate.weight"].float() @ x[t].float()).tolist()
        if score == "sigmoid":
            scores = [1 / (1 + torch.exp(torch.tensor(-v)).item()) for v in logits]
        else:
            peak = max(logits)
            exps = [torch.exp(torch.tensor(v - peak)).item() for v in logits]
            scores = [v / sum(exps) for v in exps]
        bias = w[bias_key].tolist() if bias_key else [0.0] * num_experts
        selection = [s + b for s, b in zip(scores, bias, strict=True)]
        eligible = list(range(num_experts))
        if n_group and topk_group:
            group_score = {
                g: sum(sorted(selection[g * per_group : (g + 1) * per_group], reverse=True)[:2])
                for g in range(n_group)
            }
            kept = sorted(group_score, key=lambda g: -group_score[g])[:topk_group]
            eligible = [e for e in eligible if e // per_group in kept]
        chosen = sorted(eligible, key=lambda e: -selection[e])[:top_k]
        weights = [(selection if bias_in_weights else scores)[e] for e in chosen]
        if norm_topk_prob and top_k > 1:
            weights = [v / (sum(weights) + 1e-20) for v in weights]
        for e, weight in zip(chosen, weights, strict=True):
            out[t] += weight * scale * _swiglu(x[t], w, f"{prefix}experts.{e}.")
        if shared_prefix:
            out[t] += _swiglu(x[t], w, shared_prefix)
    return out


def _rotate_partial(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, theta: float) -> torch.Tensor:
    """x [H, L, D]: rotate-half on the first rotary_dim dims, frequencies theta^(-2i/rotary_dim)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    freqs = positions.float()[:, None] * inv_freq[None]
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = rot * cos + torch.cat([-rot[..., half:], rot[..., :half]], -1) * sin
    return torch.cat([rotated, rest], dim=-1)


def _weights(checkpoint: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((checkpoint / "config.json").read_text())
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        weights.update({k: v.float() for k, v in load_file(str(shard)).items()})
    return config, weights


def _attend(q, k, v, mask, heads, kv_heads, head_dim):
    k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
    scores = (q @ k.transpose(1, 2)) * head_dim**-0.5
    return (torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v).transpose(0, 1)


def llada2_reference_logits(checkpoint: Path, ids: list[int], block_size: int = B) -> torch.Tensor:
    """modeling_llada2_moe.py over one sequence: fused qkv split [H, Hkv, Hkv] -> per-head RMSNorm ->
    partial RoPE -> attention under the block mask tril(ones(blocks)) -> dense; layer 0 a dense MLP,
    the others the sigmoid / grouped / biased router with a shared expert."""
    config, w = _weights(checkpoint)
    heads, kv_heads, head_dim = (
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
    )
    rotary_dim, eps, length = (
        int(head_dim * config["partial_rotary_factor"]),
        config["rms_norm_eps"],
        len(ids),
    )
    blocks = torch.arange(length) // block_size
    mask = blocks[None, :] <= blocks[:, None]
    positions = torch.arange(length)
    x = w["model.word_embeddings.weight"][torch.tensor(ids)]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        qkv = (h @ w[p + "attention.query_key_value.weight"].T).view(length, heads + 2 * kv_heads, head_dim)
        q, k, v = qkv[:, :heads], qkv[:, heads : heads + kv_heads], qkv[:, heads + kv_heads :]
        q = _rms(q, w[p + "attention.query_layernorm.weight"], eps).transpose(0, 1)
        k = _rms(k, w[p + "attention.key_layernorm.weight"], eps).transpose(0, 1)
        q = _rotate_partial(q, positions, rotary_dim, config["rope_theta"])
        k = _rotate_partial(k, positions, rotary_dim, config["rope_theta"])
        attended = _attend(q, k, v.transpose(0, 1), mask, heads, kv_heads, head_dim).reshape(length, -1)
        x = x + attended @ w[p + "attention.dense.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        if i < config["first_k_dense_replace"]:
            x = x + _swiglu(h, w, p + "mlp.")
        else:
            x = x + naive_moe(
                h,
                w,
                p + "mlp.",
                num_experts=config["num_experts"],
                top_k=config["num_experts_per_tok"],
                score="sigmoid",
                n_group=config["n_group"],
                topk_group=config["topk_group"],
                norm_topk_prob=True,
                scale=config["routed_scaling_factor"],
                bias_key=p + "mlp.gate.expert_bias",
                shared_prefix=p + "mlp.shared_experts.",
            )
    return _rms(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


def llada_moe_reference_logits(checkpoint: Path, ids: list[int]) -> torch.Tensor:
    """modeling_lladamoe.py: full attention, softmax router with the bias added to the weights too."""
    config, w = _weights(checkpoint)
    heads, eps, length = config["num_attention_heads"], config["rms_norm_eps"], len(ids)
    head_dim = config["hidden_size"] // heads
    rotary_dim = int(head_dim * config["partial_rotary_factor"])
    mask = torch.ones(length, length, dtype=torch.bool)
    positions = torch.arange(length)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    for i, is_moe in enumerate(config["moe_layer_freq"]):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        q = _rms(
            (h @ w[p + "self_attn.q_proj.weight"].T).view(length, heads, head_dim),
            w[p + "self_attn.q_norm.weight"],
            eps,
        )
        k = _rms(
            (h @ w[p + "self_attn.k_proj.weight"].T).view(length, heads, head_dim),
            w[p + "self_attn.k_norm.weight"],
            eps,
        )
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(length, heads, head_dim)
        q = _rotate_partial(q.transpose(0, 1), positions, rotary_dim, config["rope_theta"])
        k = _rotate_partial(k.transpose(0, 1), positions, rotary_dim, config["rope_theta"])
        attended = _attend(q, k, v.transpose(0, 1), mask, heads, heads, head_dim).reshape(length, -1)
        x = x + attended @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        if not is_moe:
            x = x + _swiglu(h, w, p + "mlp.")
            continue
        routed = naive_moe(
            h,
            w,
            p + "mlp.",
            num_experts=config["num_experts"],
            top_k=config["num_experts_per_tok"],
            score="softmax",
            n_group=None,
            topk_group=None,
            norm_topk_prob=False,
            scale=1.0,
            bias_key=p + "mlp.expert_bias",
            bias_in_weights=True,
        )
        x = x + routed + _swiglu(h, w, p + "shared_expert.")
    return _rms(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


def _forward(model, rows: list[list[int]], past=None, starts=None, use_cache=False, pad_to: int = 0):
    """Right-padded batch of query rows (row r at positions starts[r]..), optional per-row past."""
    starts = starts or [0] * len(rows)
    width = max(pad_to, *(len(row) for row in rows))
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


PROMPT_A = [5, 17, 99, 3, 250, 41, 77, 8, 12, 190, 66, 31, 2, 9, 140, 23, 7, 61, 88]  # 19: 2 blocks + 3
PROMPT_B = [200, 7, 31, 9, 144, 2, 58, 101, 33, 4, 19]  # 11


# ------------------------------------------------------------------------------------------ the MoE block
def _random_block(router: RouterConfig, shared: int | None, seed: int) -> SparseMoeBlock:
    torch.manual_seed(seed)
    block = SparseMoeBlock(32, 16, router, shared_intermediate_size=shared)
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(0, 0.3)
        if router.expert_bias:
            block.gate.expert_bias.normal_(0, 0.2)
    return block.eval()


ROUTERS = {
    "ling-sigmoid-grouped-bias": RouterConfig(
        num_experts=8, top_k=3, score_function="sigmoid", n_group=4, topk_group=2,
        routed_scaling_factor=2.5, norm_topk_prob=True, expert_bias=True,
    ),
    "sigmoid-grouped-unnormalised": RouterConfig(
        num_experts=12, top_k=2, score_function="sigmoid", n_group=3, topk_group=1,
        routed_scaling_factor=1.5, norm_topk_prob=False, expert_bias=True,
    ),
    "softmax-topk-normalised": RouterConfig(
        num_experts=6, top_k=2, score_function="softmax", norm_topk_prob=True,
    ),
    "softmax-grouped-scaled-bias": RouterConfig(
        num_experts=8, top_k=4, score_function="softmax", n_group=2, topk_group=1,
        routed_scaling_factor=16.0, expert_bias=True,
    ),
    "softmax-top1-bias-in-weights": RouterConfig(
        num_experts=4, top_k=1, score_function="softmax", norm_topk_prob=True, expert_bias=True,
        bias_in_weights=True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ROUTERS))
def test_moe_block_matches_the_naive_reference(name: str) -> None:
    router = ROUTERS[name]
    block = _random_block(router, shared=24 if "grouped" in name else None, seed=len(name))
    weights = {k: v.detach() for k, v in block.state_dict().items()}
    x = torch.randn(37, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = block(x.view(1, 37, 32)).view(37, 32)
    expected = naive_moe(
        x,
        weights,
        "",
        num_experts=router.num_experts,
        top_k=router.top_k,
        score=router.score_function,
        n_group=router.n_group,
        topk_group=router.topk_group,
        norm_topk_prob=router.norm_topk_prob,
        scale=router.routed_scaling_factor,
        bias_key="gate.expert_bias" if router.expert_bias else None,
        bias_in_weights=router.bias_in_weights,
        shared_prefix="shared_experts." if "grouped" in name else None,
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_bias_selects_experts_but_does_not_weight_them() -> None:
    router = ROUTERS["ling-sigmoid-grouped-bias"]
    block = _random_block(router, shared=None, seed=0)
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        weights, indices = block.route(x)
        scores = torch.sigmoid(block.gate(x))
    chosen = scores.gather(1, indices)
    torch.testing.assert_close(weights, 2.5 * chosen / chosen.sum(-1, keepdim=True))
    without_bias = torch.topk(scores, router.top_k).indices.sort().values
    assert not torch.equal(indices.sort().values, without_bias)  # the bias changed some selections
    groups = indices // (router.num_experts // router.n_group)
    assert all(len(set(row)) <= router.topk_group for row in groups.tolist())


def test_moe_results_do_not_depend_on_padding_rows() -> None:
    block = _random_block(ROUTERS["ling-sigmoid-grouped-bias"], shared=24, seed=5)
    generator = torch.Generator().manual_seed(3)
    real = torch.randn(2, 9, 32, generator=generator)
    padded = torch.cat([real, torch.randn(2, 7, 32, generator=generator) * 5], dim=1)
    with torch.inference_mode():
        alone = block(real)
        with_padding = block(padded)[:, :9]
        _, real_indices = block.route(real.reshape(-1, 32))
        _, padded_indices = block.route(padded[:, :9].reshape(-1, 32))
        one_row = block(real[1:])
    assert torch.equal(real_indices, padded_indices)
    torch.testing.assert_close(with_padding, alone, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(one_row, alone[1:], atol=1e-6, rtol=1e-6)


def test_router_config_names_and_checks() -> None:
    deepseek = RouterConfig.from_hf(
        {"n_routed_experts": 16, "num_experts_per_tok": 4, "scoring_func": "sigmoid", "n_group": 4,
         "topk_group": 2, "topk_method": "noaux_tc", "routed_scaling_factor": 2.0, "norm_topk_prob": True}
    )  # fmt: skip
    assert (deepseek.num_experts, deepseek.score_function, deepseek.expert_bias) == (16, "sigmoid", True)
    lladamoe = RouterConfig.from_hf(
        {"num_experts": 8, "num_experts_per_tok": 2, "moe_router_score_function": "softmax",
         "router_num_group": -2, "router_topk_group": -2}
    )  # fmt: skip
    assert not lladamoe.grouped and lladamoe.score_function == "softmax"
    with pytest.raises(VdiffValidationError, match="n_group"):
        RouterConfig(num_experts=6, top_k=2, n_group=4, topk_group=2)
    with pytest.raises(VdiffValidationError, match="topk_group"):
        RouterConfig(num_experts=8, top_k=5, n_group=4, topk_group=2)
    with pytest.raises(VdiffValidationError, match="score function"):
        RouterConfig(num_experts=8, top_k=2, score_function="sqrtsoftplus")


# ------------------------------------------------------------------------------------------ LLaDA2
def test_real_layout_loads_as_the_llada2_family(llada2_checkpoint: Path, llada2_model: LLaDA2Model) -> None:
    config = json.loads((llada2_checkpoint / "config.json").read_text())
    assert config["model_type"] == "llada2_moe" and "mask_token_id" not in config
    family = get_family("llada2_moe")
    assert family.block_causal and family.decoding == "block" and family.block_length == 32
    assert family.for_checkpoint(config).block_length == B and llada2_block_size({}) == 32
    model = llada2_model
    assert model.block_size == B and not model.logit_shift and model.is_block_causal
    assert not model.supports_token_editing
    assert isinstance(model.model.layers[1].mlp, SparseMoeBlock)
    assert not isinstance(model.model.layers[0].mlp, SparseMoeBlock)
    assert model.config.rotary_dim == 16 and model.config.router is not None
    assert model.config.router.grouped and model.config.router.expert_bias
    tokenizer = load_tokenizer(llada2_checkpoint, family, hf_config=config)
    vocab = tokenizer.tokenizer.get_vocab()
    assert tokenizer.mask_token_id == vocab["<|mask|>"]
    assert tokenizer.eos_token_ids[:2] == [vocab["<|endoftext|>"], vocab["<|role_end|>"]]
    prompt = tokenizer.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>hi<|role_end|>"
        "<role>ASSISTANT</role>"
    )


def test_llada2_refuses_what_it_does_not_implement(llada2_checkpoint: Path) -> None:
    config = json.loads((llada2_checkpoint / "config.json").read_text())
    for key, value in (("norm_head", True), ("rope_scaling", {"type": "yarn"}), ("hidden_act", "gelu")):
        with pytest.raises(VdiffValidationError, match=key), torch.device("meta"):
            get_family("llada2_moe").build({**config, key: value})
    with pytest.raises(VdiffValidationError, match="expert_bias"), torch.device("meta"):
        get_family("llada2_moe").build({**config, "moe_router_enable_expert_bias": False})


def test_llada2_logits_match_the_reference_in_a_padded_batch(
    llada2_checkpoint: Path, llada2_model: LLaDA2Model
) -> None:
    logits = _forward(llada2_model, [PROMPT_A, PROMPT_B], pad_to=24).logits
    for row, prompt in enumerate([PROMPT_A, PROMPT_B]):
        expected = llada2_reference_logits(llada2_checkpoint, prompt)
        torch.testing.assert_close(logits[row, : len(prompt)], expected, atol=1e-4, rtol=1e-4)
    alone = _forward(llada2_model, [PROMPT_B]).logits[0]
    # float32 rounding only: a padded batch of 2 and a batch of 1 are other GEMM shapes, which some CPUs
    # accumulate in another order (1.2e-5 seen); token-level batch invariance is the engine test below
    torch.testing.assert_close(logits[1, : len(PROMPT_B)], alone, atol=5e-5, rtol=1e-4)


def test_llada2_cache_of_finished_blocks_is_exact(llada2_model: LLaDA2Model) -> None:
    full = _forward(llada2_model, [PROMPT_A, PROMPT_B]).logits
    prefixes = [PROMPT_A[: 2 * B], PROMPT_B[:B]]
    cached = _forward(llada2_model, prefixes, use_cache=True)
    past = [SequenceKV.from_batch(cached.past_key_values, row, 0, len(p)) for row, p in enumerate(prefixes)]
    step = _forward(llada2_model, [PROMPT_A[2 * B :], PROMPT_B[B:]], past=past, starts=[2 * B, B]).logits
    torch.testing.assert_close(step[0, :3], full[0, 2 * B :], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[1, :3], full[1, B : len(PROMPT_B)], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ LLaDA-MoE
def test_llada_moe_is_told_apart_from_llada_by_its_architecture(llada_moe_checkpoint: Path) -> None:
    config = json.loads((llada_moe_checkpoint / "config.json").read_text())
    assert config["model_type"] == "llada"
    family = get_family("llada").for_checkpoint(config)
    assert family.name == "llada_moe" and not family.block_causal and family.decoding is None
    assert get_family("llada").for_checkpoint({"architectures": ["LLaDAModelLM"]}).name == "llada"
    assert get_family("lladamoe").name == "llada_moe"


def test_llada_moe_logits_match_the_reference(llada_moe_checkpoint: Path) -> None:
    loaded = load_model(EngineConfig(model=str(llada_moe_checkpoint), device="cpu", dtype="float32"))
    model = loaded.model
    assert isinstance(model, LLaDAMoEModel) and not model.is_causal
    assert model.config.router.bias_in_weights and not model.config.router.norm_topk_prob
    logits = _forward(model, [PROMPT_A, PROMPT_B]).logits
    for row, prompt in enumerate([PROMPT_A, PROMPT_B]):
        expected = llada_moe_reference_logits(llada_moe_checkpoint, prompt)
        torch.testing.assert_close(logits[row, : len(prompt)], expected, atol=1e-4, rtol=1e-4)


def test_llada_moe_decodes_with_the_default_threshold_policy(llada_moe_checkpoint: Path) -> None:
    engine = LLMEngine(EngineConfig(model=str(llada_moe_checkpoint), device="cpu"))
    params = SamplingParams(max_tokens=8, ignore_eos=True, temperature=0.0)
    assert engine.process_request([1, 2], params).params.decoding == "threshold"
    outputs = run_jobs(engine, [([5, 6, 7], params), ([40, 41, 42, 43, 44], params)])
    assert all(len(output.outputs[0].token_ids) == 8 for output in outputs)


# ------------------------------------------------------------------------------------------ decoding
GEN = 14
JOBS = [[5, 6, 7, 8, 9, 10, 11, 12], [40, 41], [100, 3, 9, 27, 31, 77, 12, 50, 51, 52, 53], [200, 201, 17]]


def oracle_generate(checkpoint: Path, prompt: list[int], mask_id: int, threshold: float) -> list[int]:
    """LLaDA2's generate() at temperature 0 (argmax), no cache: each step recomputes the sequence up to the
    current block's end; commit every mask with p > threshold, else the single most confident one.
    The canvas is generate()'s (inclusionAI LLaDA2 modeling `generate`, reference/block-diffusion.md):
    ceil((P + G) / B) * B positions with blocks at absolute multiples of B, decoding from block P // B,
    so the prompt's partial block is completed first and the last block is a whole one."""
    x = prompt + [mask_id] * (-(-(len(prompt) + GEN) // B) * B - len(prompt))
    for block_start in range(len(prompt) // B * B, len(x), B):
        block = range(block_start, min(block_start + B, len(x)))
        while masks := [i for i in block if x[i] == mask_id]:
            probs = torch.softmax(llada2_reference_logits(checkpoint, x[: block[-1] + 1]), dim=-1)
            confidence, tokens = probs.max(dim=-1)
            above = [i for i in masks if confidence[i] > threshold]
            for i in above or [max(masks, key=lambda i: confidence[i])]:
                x[i] = int(tokens[i])
    return x[len(prompt) : len(prompt) + GEN]


def run_jobs(engine: LLMEngine, jobs: list[tuple[list[int], SamplingParams]], stagger: int = 0) -> list:
    results, pending, step = {}, list(enumerate(jobs)), 0
    while pending or engine.has_unfinished_requests():
        while pending and step >= stagger * pending[0][0]:
            index, (prompt, params) = pending.pop(0)
            engine.add_request(f"job-{index}", prompt, params)
        for output in engine.step():
            if output.finished:
                results[output.request_id] = output
        step += 1
    return [results[f"job-{i}"] for i in range(len(jobs))]


def _params(**changes) -> SamplingParams:
    return SamplingParams(**({"max_tokens": GEN, "ignore_eos": True, "temperature": 0.0} | changes))


@pytest.fixture(scope="module")
def llada2_engine(llada2_checkpoint: Path) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(llada2_checkpoint), device="cpu"))


@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_block_decoding_equals_llada2_generate_without_cache(
    llada2_checkpoint: Path, llada2_engine: LLMEngine, threshold: float
) -> None:
    assert llada2_engine.process_request([1, 2], _params()).params.decoding == "block"
    results = run_jobs(llada2_engine, [(prompt, _params(threshold=threshold)) for prompt in JOBS])
    for prompt, result in zip(JOBS, results, strict=True):
        expected = oracle_generate(llada2_checkpoint, prompt, llada2_engine.mask_token_id, threshold)
        assert list(result.outputs[0].token_ids) == expected


def test_block_decoding_does_not_depend_on_batching(llada2_engine: LLMEngine) -> None:
    jobs = [(prompt, _params(threshold=0.6)) for prompt in JOBS]
    alone = [run_jobs(llada2_engine, [job])[0].outputs[0].token_ids for job in jobs]
    together = [result.outputs[0].token_ids for result in run_jobs(llada2_engine, jobs, stagger=2)]
    assert together == alone
    assert all(len(tokens) == GEN for tokens in alone)


def test_expert_biases_stay_float32_under_a_half_precision_dtype(llada2_checkpoint: Path) -> None:
    engine = LLMEngine(EngineConfig(model=str(llada2_checkpoint), dtype="bfloat16", device="cpu"))
    biases = {n: p.dtype for n, p in engine.loaded.model.named_parameters() if n.endswith("expert_bias")}
    weights = {p.dtype for n, p in engine.loaded.model.named_parameters() if not n.endswith("expert_bias")}
    assert biases and set(biases.values()) == {torch.float32} and weights == {torch.bfloat16}


def test_llada2_threshold_defaults_to_generates_095(
    llada2_checkpoint: Path, llada2_engine: LLMEngine
) -> None:
    """inclusionAI LLaDA2 modeling `generate(threshold=0.95)` (reference/block-diffusion.md): the family
    default. A request, --threshold and generation_config.json's `threshold` each override it; a
    family without a published threshold (LLaDA-MoE here) keeps 0.9."""
    assert llada2_engine.process_request([1, 2], _params()).params.threshold == 0.95
    assert llada2_engine.process_request([1, 2], _params(threshold=0.6)).params.threshold == 0.6
    flagged = LLMEngine(EngineConfig(model=str(llada2_checkpoint), device="cpu", threshold=0.7))
    assert flagged.process_request([1, 2], _params()).params.threshold == 0.7
    generation_config = llada2_checkpoint / "generation_config.json"
    saved = generation_config.read_text() if generation_config.exists() else None
    config = json.loads(saved) if saved else {}
    generation_config.write_text(json.dumps(config | {"threshold": 0.8}))
    try:
        configured = LLMEngine(EngineConfig(model=str(llada2_checkpoint), device="cpu"))
        assert configured.process_request([1, 2], _params()).params.threshold == 0.8
    finally:
        if saved is None:
            generation_config.unlink()
        else:
            generation_config.write_text(saved)


def test_llada_moe_threshold_keeps_the_server_default(llada_moe_checkpoint: Path) -> None:
    engine = LLMEngine(EngineConfig(model=str(llada_moe_checkpoint), device="cpu"))
    assert engine.process_request([1, 2], _params()).params.threshold == 0.9
