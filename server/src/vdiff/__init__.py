"""vdiff: serve diffusion language models with vLLM's API. Public API: LLM, SamplingParams.

Imports are lazy so `import vdiff` stays light (no torch until LLM is used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vdiff.engine.llm import LLM
    from vdiff.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name == "LLM":
        from vdiff.engine.llm import LLM

        return LLM
    if name == "SamplingParams":
        from vdiff.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'vdiff' has no attribute {name!r}")
