"""The decoding policies the benchmark compares: each one is a set of SamplingParams overrides.

Add a row to POLICIES to benchmark a new policy; rows the engine rejects for a model (an unknown
decoding name, APD without a verifier, a verifier with another tokenizer, the block policy on a
full-attention dLLM, a dual cache on a block-diffusion model, ...) are skipped with the engine's reason.

The `reference` row, the baseline of every speed ratio, is each family's published one-token-per-step
rule: LLaDA's and Dream's reference decoders over the canvas for the dLLMs, and for block-diffusion
models (SDAR) the block policy committing the most confident mask of the current block per step with the
exact cache of finished blocks (SDAR's low_confidence_static; τ = 1 is never exceeded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REFERENCE_POLICY = "reference"


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    curve: str = ""
    """Rows sharing a curve name are one sweep of a knob (threshold τ, APD R): the plot joins them."""
    verifier: str | None = None
    """APD verifier (a demo model name) the engine must load for this row; None = the model's default.
    The HTTP runs serve one verifier per server, so rows naming another one are engine-only."""
    block_overrides: dict[str, Any] | None = None
    """The same rule on a block-diffusion model (block-causal attention), where it differs; None = the
    overrides as they are."""

    def overrides_for(self, block_diffusion: bool) -> dict[str, Any]:
        """The SamplingParams overrides of this row on a model of that kind."""
        if block_diffusion and self.block_overrides is not None:
            return self.block_overrides
        return self.overrides


POLICIES: tuple[Policy, ...] = (
    Policy(
        REFERENCE_POLICY,
        {"decoding": "reference"},
        "family reference decoder, one token per step (block-diffusion models: the block policy with "
        "one token per step per block, SDAR's low_confidence_static, exact block cache)",
        block_overrides={"decoding": "block", "threshold": 1.0},
    ),
    Policy(
        "fixed-4-per-step",
        {"decoding": "reference", "steps": 4},
        "reference rule with 4x fewer steps: 4 tokens per step from independent marginals",
    ),
    Policy(
        "threshold-0.9",
        {"decoding": "threshold", "threshold": 0.9},
        "Fast-dLLM confidence threshold",
        curve="threshold",
    ),
    Policy(
        "threshold-0.7", {"decoding": "threshold", "threshold": 0.7}, "looser threshold", curve="threshold"
    ),
    Policy(
        "threshold-0.5",
        {"decoding": "threshold", "threshold": 0.5},
        "loosest threshold of the sweep",
        curve="threshold",
    ),
    Policy(
        "threshold-0.9-no-cache-b8",
        {"decoding": "threshold", "threshold": 0.9, "block_length": 8},
        "the cache rows' baseline: same rule and block length, no KV cache",
    ),
    Policy("factor-1.0", {"decoding": "threshold", "factor": 1.0}, "Fast-dLLM factor rule"),
    Policy(
        "threshold-0.9-prefix-cache",
        {
            "decoding": "threshold",
            "threshold": 0.9,
            "kv_cache": "prefix",
            "block_length": 8,
            "kv_cache_vicinity": 0,
        },
        "threshold with Fast-dLLM prefix KV cache, block 8",
    ),
    Policy(
        "threshold-0.9-dual-cache-vicinity-16",
        {
            "decoding": "threshold",
            "threshold": 0.9,
            "kv_cache": "dual",
            "block_length": 8,
            "kv_cache_vicinity": 16,
        },
        "dual cache that also recomputes the 16 positions left of the block (dInfer's vicinity refresh)",
    ),
    Policy(
        "threshold-0.9-dual-cache",
        {
            "decoding": "threshold",
            "threshold": 0.9,
            "kv_cache": "dual",
            "block_length": 8,
            "kv_cache_vicinity": 0,
        },
        "threshold with Fast-dLLM dual KV cache, block 8",
    ),
    Policy(
        "block-4-per-step",
        {"decoding": "block", "steps": 4, "threshold": 1.0},
        "block policy, one step per block: its 4 tokens at once from independent marginals",
    ),
    Policy(
        "block-threshold-0.9",
        {"decoding": "block", "threshold": 0.9},
        "block policy: every mask of the block with p > 0.9, at least the most confident one, exact "
        "block cache (SDAR's low_confidence_dynamic; sdar-demo's serving default)",
        curve="block-threshold",
    ),
    Policy(
        "block-threshold-0.7",
        {"decoding": "block", "threshold": 0.7},
        "block policy, looser threshold",
        curve="block-threshold",
    ),
    Policy(
        "block-threshold-0.5",
        {"decoding": "block", "threshold": 0.5},
        "block policy, loosest threshold of the sweep",
        curve="block-threshold",
    ),
    Policy(
        "apd-0.7",
        {"decoding": "apd", "apd_mixture_weight": 0.7},
        "APD with the model's small Qwen2 verifier (same tokenizer), R=0.7",
        curve="apd",
    ),
    Policy(
        "apd-0.5",
        {"decoding": "apd", "apd_mixture_weight": 0.5},
        "APD, R=0.5 (trusts the AR more)",
        curve="apd",
    ),
    Policy(
        "apd-0.9",
        {"decoding": "apd", "apd_mixture_weight": 0.9},
        "APD, R=0.9 (trusts the dLLM more)",
        curve="apd",
    ),
    Policy(
        "apd-0.7-large-verifier",
        {"decoding": "apd", "apd_mixture_weight": 0.7},
        "APD R=0.7 with a verifier as large as the dLLM (qwen2-ar-demo)",
        verifier="qwen2-ar-demo",
    ),
)


def curves(policies: list[Policy]) -> dict[str, list[str]]:
    """Curve name -> the names of its rows, for the plot."""
    grouped: dict[str, list[str]] = {}
    for policy in policies:
        if policy.curve:
            grouped.setdefault(policy.curve, []).append(policy.name)
    return grouped


def select_policies(names: list[str] | None) -> list[Policy]:
    if not names:
        return list(POLICIES)
    known = {policy.name: policy for policy in POLICIES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown policies {unknown}; known: {', '.join(known)}")
    chosen = [known[name] for name in names]
    if REFERENCE_POLICY not in names:
        chosen.insert(0, known[REFERENCE_POLICY])  # ratios are always against the reference
    return chosen
