"""Shared fixtures: tiny checkpoints in the real LLaDA / Dream / Qwen2 layouts (built once per session)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest
import torch
from checkpoint_factory import make_dream_checkpoint, make_llada_checkpoint, make_qwen2_ar_checkpoint

# Tiny matmuls on a shared 2-core machine: extra OpenMP threads only spin against each other.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def llada_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llada_checkpoint(tmp_path_factory.mktemp("llada-tiny"))


@pytest.fixture(scope="session")
def dream_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dream_checkpoint(tmp_path_factory.mktemp("dream-tiny"))


@pytest.fixture(scope="session")
def qwen2_ar_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_qwen2_ar_checkpoint(tmp_path_factory.mktemp("qwen2-ar-tiny"))


@pytest.fixture(scope="session")
def llada_ar_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 causal LM with the tiny LLaDA's tokenizer: an APD verifier for llada_checkpoint."""
    return make_qwen2_ar_checkpoint(tmp_path_factory.mktemp("llada-ar-tiny"), tokenizer_of="llada")
