"""torch.compile for the model forward on CUDA, with a permanent eager fallback.

A denoising step re-runs the same few kernels over the same canvas shapes hundreds of times, so on a GPU
the per-kernel launch overhead is a large share of a small-batch step; inductor fuses the norm / RoPE /
MLP elementwise work. Shapes vary with the batch (rows, canvas length, cached keys), so the graph is
compiled with dynamic shapes instead of CUDA graphs per shape. `--enforce-eager` (vLLM's flag) turns it
off. On CPU the engine stays eager: compilation needs a C++ toolchain at run time and buys little
there. ModelRunner.warm_up compiles at start-up, before the server reports ready. If compiling or
running the compiled graph raises, the runner logs once and stays eager; a forward that failed compiled
is re-run eagerly, so no request sees the failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

ForwardFn = Callable[..., Any]


def should_compile(device: torch.device, enforce_eager: bool) -> bool:
    return not enforce_eager and device.type == "cuda" and hasattr(torch, "compile")


class CompiledForward:
    """Calls the compiled module until it fails once, then the eager module for good."""

    def __init__(self, module: torch.nn.Module, backend: str = "inductor") -> None:
        self.eager = module
        self.backend = backend
        self.compiled: ForwardFn | None = torch.compile(module, backend=backend, dynamic=True)
        self.fallback_reason: str | None = None

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # any compiler failure must degrade, not fail a request
                self.compiled = None
                self.fallback_reason = f"{type(error).__name__}: {error}"
                logger.warning(
                    "torch.compile (%s) failed, serving eagerly from now on: %s",
                    self.backend,
                    self.fallback_reason,
                )
        return self.eager(*args, **kwargs)


def compile_forward(module: torch.nn.Module, device: torch.device, enforce_eager: bool) -> ForwardFn:
    """The callable the model runner uses for forwards: compiled on CUDA unless --enforce-eager."""
    if not should_compile(device, enforce_eager):
        return module
    logger.info("compiling the model forward with torch.compile (dynamic shapes); --enforce-eager disables")
    return CompiledForward(module)
