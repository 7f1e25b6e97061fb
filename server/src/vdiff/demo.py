"""Where the tiny trained demo checkpoints shipped with vdiff live (see docs/demo-models.md)."""

from __future__ import annotations

from pathlib import Path

DEMO_MODELS_DIR = Path(__file__).resolve().parent / "demo_models"
DEFAULT_DEMO_MODEL = "llada-demo"
DEMO_MODEL_NAMES = (
    "llada-demo",
    "dream-demo",
    "qwen2-ar-demo",
    "qwen2-ar-mini-demo",
    "qwen2-ar-mini-llada-demo",
    "sdar-demo",
)
"""llada-demo: LLaDA layout (default served model); dream-demo: Dream layout; qwen2-ar-demo: the
causal Qwen2 model dream-demo was initialised from (an APD verifier as large as the dLLM);
qwen2-ar-mini-demo: the small APD verifier, both sharing dream-demo's tokenizer;
qwen2-ar-mini-llada-demo: the same small verifier with llada-demo's tokenizer (APD for llada-demo);
sdar-demo: SDAR layout, block diffusion (B = 4, exact block cache), dream-demo's tokenizer."""


def demo_model_path(name: str = DEFAULT_DEMO_MODEL) -> Path:
    """Directory of a shipped demo checkpoint, loadable like any local model directory."""
    if name not in DEMO_MODEL_NAMES:
        raise ValueError(f"unknown demo model {name!r}; choose one of {', '.join(DEMO_MODEL_NAMES)}")
    return DEMO_MODELS_DIR / name


def is_demo_model_available(name: str = DEFAULT_DEMO_MODEL) -> bool:
    """True when the checkpoint files of the demo model are present (they ship as package data)."""
    path = demo_model_path(name)
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def shipped_demo_path(name: str) -> Path | None:
    """The directory of demo model `name` when it is one and its files are present, else None (so a
    model argument can name a demo model like a hub id)."""
    return demo_model_path(name) if name in DEMO_MODEL_NAMES and is_demo_model_available(name) else None
