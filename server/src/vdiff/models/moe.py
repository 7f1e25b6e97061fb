"""Mixture-of-experts feed-forward blocks as the checkpoints' configs describe them.

Routing (`route`), per token, from the router logits computed in fp32:
1. scores: softmax over the experts, or an elementwise sigmoid (`score_function` / `scoring_func` /
   `moe_router_score_function`);
2. selection scores: scores + the expert correction bias (`expert_bias` / `e_score_correction_bias`) when
   the router has one. The bias only chooses experts (DeepSeek-V3, Ling-2.0 / LLaDA2); the weights are the
   unbiased scores, unless `bias_in_weights` (the LLaDA-MoE modeling file adds it to the weights too);
3. group-limited top-k (`n_group`, `topk_group`): the experts are split into n_group contiguous groups, a
   group scores the sum of its top-2 selection scores, only the topk_group best groups stay eligible;
4. the top_k experts by selection score among the eligible ones;
5. weights: the chosen experts' scores, divided by their sum (+1e-20) when `norm_topk_prob` and
   top_k > 1, times `routed_scaling_factor`.

Experts run grouped by expert: the (token, slot) pairs are sorted by expert and each expert multiplies
its contiguous slice of rows in one matmul (a Python loop over experts, never over tokens). Each pair's
output lands in its own row, and a token's k outputs are summed in slot order, so the result for a token
never depends on which other tokens (padding included) share the batch, and no atomics are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdiff.distributed.layers import ColumnParallelLinear, RowParallelLinear
from vdiff.distributed.state import building_state
from vdiff.errors import VdiffValidationError
from vdiff.models.layers import swiglu

SCORE_FUNCTIONS = ("softmax", "sigmoid")
GROUP_SCORE_TOPK = 2
"""A group's score is the sum of its best 2 selection scores (DeepSeek-V3, BailingMoeV2)."""


def _first(hf_config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if hf_config.get(key) is not None:
            return hf_config[key]
    return default


@dataclass(frozen=True, slots=True)
class RouterConfig:
    num_experts: int
    top_k: int
    score_function: str = "softmax"
    n_group: int | None = None
    topk_group: int | None = None
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = False
    expert_bias: bool = False
    bias_in_weights: bool = False
    """Add the bias to the weights too, not only to the selection scores (LLaDA-MoE's modeling file)."""

    def __post_init__(self) -> None:
        if self.score_function not in SCORE_FUNCTIONS:
            raise VdiffValidationError(
                f"MoE router score function {self.score_function!r} is not supported "
                f"({', '.join(SCORE_FUNCTIONS)})",
                "model",
            )
        if not 1 <= self.top_k <= self.num_experts:
            raise VdiffValidationError(
                f"num_experts_per_tok {self.top_k} must be in 1..num_experts ({self.num_experts})", "model"
            )
        if self.grouped:
            assert self.n_group is not None and self.topk_group is not None
            per_group = self.num_experts // self.n_group
            if self.num_experts % self.n_group or per_group < GROUP_SCORE_TOPK:
                raise VdiffValidationError(
                    f"n_group {self.n_group} must divide num_experts {self.num_experts} into groups of at "
                    f"least {GROUP_SCORE_TOPK} experts",
                    "model",
                )
            if not 1 <= self.topk_group <= self.n_group or self.topk_group * per_group < self.top_k:
                raise VdiffValidationError(
                    f"topk_group {self.topk_group} must be in 1..n_group ({self.n_group}) and keep at "
                    f"least num_experts_per_tok ({self.top_k}) experts eligible",
                    "model",
                )

    @property
    def grouped(self) -> bool:
        return bool(self.n_group and self.n_group > 1 and self.topk_group)

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any], **overrides: Any) -> RouterConfig:
        """The router keys under their BailingMoeV2 / DeepSeek-V3 / LLaDA-MoE names."""
        values: dict[str, Any] = {
            "num_experts": int(_first(hf_config, "num_experts", "n_routed_experts")),
            "top_k": int(hf_config["num_experts_per_tok"]),
            "score_function": str(
                _first(
                    hf_config,
                    "score_function",
                    "scoring_func",
                    "moe_router_score_function",
                    default="softmax",
                )
            ).lower(),
            "n_group": _first(hf_config, "n_group", "router_num_group"),
            "topk_group": _first(hf_config, "topk_group", "router_topk_group"),
            "routed_scaling_factor": float(_first(hf_config, "routed_scaling_factor", default=1.0)),
            "norm_topk_prob": bool(_first(hf_config, "norm_topk_prob", default=False)),
            "expert_bias": bool(
                _first(hf_config, "moe_router_enable_expert_bias", default=False)
                or hf_config.get("topk_method") == "noaux_tc"
            ),
        }
        values.update(overrides)
        for key in ("n_group", "topk_group"):
            if values[key] is not None and int(values[key]) < 1:  # LLaDA-MoE's class defaults are -2
                values[key] = None
            elif values[key] is not None:
                values[key] = int(values[key])
        return cls(**values)


def route(
    logits: torch.Tensor, bias: torch.Tensor | None, config: RouterConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [N, E] -> (weights [N, top_k] fp32, expert indices [N, top_k]); see the module doc."""
    logits = logits.float()
    scores = torch.sigmoid(logits) if config.score_function == "sigmoid" else torch.softmax(logits, dim=-1)
    selection = scores if bias is None else scores + bias.float()
    if config.grouped:
        assert config.n_group is not None and config.topk_group is not None
        num_tokens = selection.shape[0]
        grouped = selection.view(num_tokens, config.n_group, -1)
        group_scores = grouped.topk(GROUP_SCORE_TOPK, dim=-1).values.sum(dim=-1)
        kept_groups = group_scores.topk(config.topk_group, dim=-1).indices
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
        selection = selection.masked_fill(
            ~keep[:, :, None].expand_as(grouped).reshape_as(selection), -torch.inf
        )
    indices = selection.topk(config.top_k, dim=-1).indices
    weights = (selection if config.bias_in_weights and bias is not None else scores).gather(1, indices)
    if config.norm_topk_prob and config.top_k > 1:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * config.routed_scaling_factor, indices


class SwiGLUMLP(nn.Module):
    """down(silu(gate(x)) * up(x)), no bias: a dense layer, an expert or a shared expert.

    Under tensor parallelism the intermediate width is split (as vLLM's MoE layers do by default);
    reduce=False leaves the rank's partial output for the MoE block to sum and all-reduce once."""

    def __init__(self, hidden_size: int, intermediate_size: int, *, reduce: bool = True) -> None:
        super().__init__()
        what = "MLP features"
        self.gate_proj = ColumnParallelLinear(hidden_size, intermediate_size, False, what=what)
        self.up_proj = ColumnParallelLinear(hidden_size, intermediate_size, False, what=what)
        self.down_proj = RowParallelLinear(intermediate_size, hidden_size, False, what=what, reduce=reduce)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_proj, self.up_proj, self.down_proj)


class MoEGate(nn.Module):
    """The router: `weight` [E, H] and, when the config enables it, `expert_bias` [E] (BailingMoeV2 names:
    `mlp.gate.weight`, `mlp.gate.expert_bias`)."""

    def __init__(self, hidden_size: int, num_experts: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
        if with_bias:
            self.expert_bias = nn.Parameter(torch.zeros(num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits in fp32 (`router_dtype: fp32`)."""
        return F.linear(x.float(), self.weight.float())


def run_experts(
    x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, experts: nn.ModuleList
) -> torch.Tensor:
    """sum_k weights[:, k] * experts[indices[:, k]](x), grouped by expert. x [N, H] -> [N, H] (x's dtype)."""
    num_tokens, top_k = indices.shape
    flat = indices.flatten()
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=len(experts)).tolist()
    rows = x.index_select(0, order // top_k)
    outputs = torch.empty_like(rows)
    start = 0
    for expert, count in zip(experts, counts, strict=True):
        if count:
            outputs[start : start + count] = expert(rows[start : start + count])
            start += count
    per_slot = torch.empty_like(outputs).index_copy_(0, order, outputs).view(num_tokens, top_k, -1)
    return (per_slot.float() * weights[:, :, None].float()).sum(dim=1).to(x.dtype)


class SparseMoeBlock(nn.Module):
    """Routed experts (`experts.{e}.{gate,up,down}_proj`) plus optional shared experts (`shared_experts`,
    moe_intermediate_size x num_shared_experts wide). Returns routed + shared for x [..., H].

    `bias_on_gate`: the correction bias is `gate.expert_bias` (BailingMoeV2); otherwise `expert_bias` on
    this block (LLaDA-MoE's `mlp.expert_bias`)."""

    def __init__(
        self,
        hidden_size: int,
        moe_intermediate_size: int,
        router: RouterConfig,
        *,
        shared_intermediate_size: int | None = None,
        bias_on_gate: bool = True,
    ) -> None:
        super().__init__()
        self.router = router
        self.gate = MoEGate(hidden_size, router.num_experts, router.expert_bias and bias_on_gate)
        if router.expert_bias and not bias_on_gate:
            self.expert_bias = nn.Parameter(torch.zeros(router.num_experts))
        self.experts = nn.ModuleList(
            SwiGLUMLP(hidden_size, moe_intermediate_size, reduce=False) for _ in range(router.num_experts)
        )
        if shared_intermediate_size:
            self.shared_experts = SwiGLUMLP(hidden_size, shared_intermediate_size, reduce=False)
        self.tp = building_state()

    @property
    def correction_bias(self) -> torch.Tensor | None:
        bias = getattr(self.gate, "expert_bias", None)
        return bias if bias is not None else getattr(self, "expert_bias", None)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, H] -> (weights [N, k], indices [N, k])."""
        return route(self.gate(x), self.correction_bias, self.router)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights, indices = self.route(flat)
        out = run_experts(flat, weights, indices, self.experts).view_as(x)
        if hasattr(self, "shared_experts"):
            out = out + self.shared_experts(x)
        return self.tp.all_reduce(out)  # every expert's partial: one all-reduce per block
