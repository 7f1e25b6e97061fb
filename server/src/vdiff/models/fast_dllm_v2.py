"""Fast-dLLM v2 (NVlabs, `Efficient-Large-Model/Fast_dLLM_v2_7B`): Qwen2.5 weights made block diffusion.

Qwen2 layers (q/k/v bias, no o bias, GQA, rotate-half RoPE, SwiGLU, untied head) with block-causal
attention over absolute blocks of `bd_size` (32). Logits are shifted like an AR model's: the
prediction for position i is read from position i-1, so the first token of a generated block comes from
the last position of the finished block before it (the published generate() commits it by argmax, then
denoises the rest of the block in sub-blocks of 8, left to right; see engine/decoding/block_causal.py).
"""

from __future__ import annotations

from typing import Any

from vdiff.errors import VdiffValidationError
from vdiff.models.sdar import SDARConfig, SDARModel

DEFAULT_BLOCK_SIZE = 32
"""generate()'s block_size and config.json's bd_size."""
SUB_BLOCK_SIZE = 8
"""generate()'s small_block_size: a block's masks are decoded 8 positions at a time, left to right."""


def fast_dllm_v2_block_size(hf_config: dict[str, Any], name: str | None = None) -> int:
    declared = hf_config.get("block_size", hf_config.get("bd_size", DEFAULT_BLOCK_SIZE))
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        raise VdiffValidationError(f"config.json bd_size must be a positive integer: {declared!r}", "model")
    return declared


class FastDLLMV2Model(SDARModel):
    """Tensor names `model.{embed_tokens, layers.i.*, norm}` and `lm_head` (Qwen2's): SDAR's block-causal
    decoder in Qwen2's layout (q/k/v biases, no o bias, no q/k norm), with shifted logits."""

    family = "fast_dllm_v2"
    logit_shift = True
    sub_block_size = SUB_BLOCK_SIZE
    supports_tensor_parallel = False
    """Not ported: its shifted first-token rule was never run across ranks (vdiff.distributed refuses it)."""

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> FastDLLMV2Model:
        config = SDARConfig.from_hf(
            hf_config, label="Fast-dLLM v2", qwen2=True, block_size=fast_dllm_v2_block_size(hf_config)
        )
        return cls(config)
