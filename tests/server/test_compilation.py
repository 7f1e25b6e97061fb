"""The torch.compile wrapper: traced by dynamo on the real native modules, numerically the eager model,
and a compiler failure degrades to eager instead of failing a request."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vdiff.config import EngineConfig
from vdiff.engine.compilation import CompiledForward, compile_forward, should_compile
from vdiff.engine.llm_engine import LLMEngine
from vdiff.models.loader import load_model


def test_compiles_only_on_cuda_and_never_with_enforce_eager() -> None:
    assert should_compile(torch.device("cuda"), enforce_eager=False)
    assert not should_compile(torch.device("cuda"), enforce_eager=True)
    assert not should_compile(torch.device("cpu"), enforce_eager=False)


def test_cpu_engine_runs_the_eager_module(llada_checkpoint: Path) -> None:
    engine = LLMEngine(EngineConfig(model=str(llada_checkpoint), device="cpu"))
    assert engine.runner.forward is engine.runner.model


def _batch(vocab: int, rows: int, length: int, cached: int = 0) -> dict:
    generator = torch.Generator().manual_seed(rows * 100 + length)
    key_mask = torch.ones(rows, cached + length, dtype=torch.bool)
    key_mask[0, cached + length - 2 :] = False  # a right-padded row, as the runner builds them
    return {
        "input_ids": torch.randint(0, vocab, (rows, length), generator=generator),
        "position_ids": torch.arange(cached, cached + length).expand(rows, -1),
        "attention_mask": key_mask,
    }


@pytest.mark.slow  # aot_eager on whole models; the fallback and no-KV warm-up tests below run dynamo too
@pytest.mark.parametrize("checkpoint", ["llada_checkpoint", "dream_checkpoint"])
def test_dynamo_traces_the_native_models_and_matches_eager_across_shapes(
    checkpoint: str, request: pytest.FixtureRequest
) -> None:
    """aot_eager runs dynamo + AOT autograd without generating kernels: it proves the forward is
    traceable with dynamic shapes (what inductor needs on CUDA) in seconds on a CPU."""
    path: Path = request.getfixturevalue(checkpoint)
    model = load_model(EngineConfig(model=str(path), device="cpu", dtype="float32")).model
    vocab = model.get_input_embeddings().weight.shape[0] if hasattr(model, "get_input_embeddings") else 64
    torch._dynamo.reset()
    compiled = CompiledForward(model, backend="aot_eager")
    with torch.inference_mode():
        for rows, length in [(1, 12), (3, 20)]:
            batch = _batch(min(vocab, 64), rows, length)
            expected = model(**batch).logits
            assert torch.allclose(compiled(**batch).logits, expected, atol=1e-5)
            assert compiled.is_compiled, compiled.fallback_reason
        # a cached step: past keys from a full forward, queries for the tail only
        full = _batch(min(vocab, 64), 2, 16)
        past = model(**full, use_cache=True).past_key_values
        prefix = [(k[:, :, :10], v[:, :, :10]) for k, v in past]
        tail = {
            "input_ids": full["input_ids"][:, 10:],
            "position_ids": full["position_ids"][:, 10:],
            "attention_mask": full["attention_mask"],
            "past_key_values": prefix,
        }
        assert torch.allclose(compiled(**tail).logits, model(**tail).logits, atol=1e-5)
    assert compiled.is_compiled, compiled.fallback_reason


def test_a_failing_compiler_falls_back_to_eager_once_and_for_good(llada_checkpoint: Path) -> None:
    calls = []

    def broken_backend(graph_module: torch.fx.GraphModule, example_inputs: list) -> None:
        calls.append(1)
        raise RuntimeError("no kernels for you")

    model = load_model(EngineConfig(model=str(llada_checkpoint), device="cpu", dtype="float32")).model
    torch._dynamo.reset()
    compiled = CompiledForward(model, backend=broken_backend)
    batch = _batch(64, 2, 9)
    with torch.inference_mode():
        expected = model(**batch).logits
        assert torch.equal(compiled(**batch).logits, expected)
        assert not compiled.is_compiled and "no kernels for you" in (compiled.fallback_reason or "")
        assert torch.equal(compiled(**batch).logits, expected)
    assert len(calls) == 1


def test_compile_forward_returns_the_module_when_not_compiling(llada_checkpoint: Path) -> None:
    model = load_model(EngineConfig(model=str(llada_checkpoint), device="cpu")).model
    assert compile_forward(model, torch.device("cpu"), enforce_eager=False) is model
    assert compile_forward(model, torch.device("cuda"), enforce_eager=True) is model


@pytest.mark.slow  # the no-KV-cache warm-up below runs the same warm-up path
def test_warm_up_compiles_the_full_and_the_cached_forward_before_serving(llada_checkpoint: Path) -> None:
    from vdiff.engine.model_runner import ModelRunner

    model = load_model(EngineConfig(model=str(llada_checkpoint), device="cpu", dtype="float32")).model
    runner = ModelRunner(model, torch.device("cpu"))
    runner.warm_up()  # eager: nothing to do
    assert runner.forward is model and runner.num_forwards == 0
    graphs: list[torch.fx.GraphModule] = []

    def recording_backend(graph_module: torch.fx.GraphModule, example_inputs: list):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    runner.forward = CompiledForward(model, backend=recording_backend)
    runner.warm_up()
    assert runner.forward.is_compiled, runner.forward.fallback_reason
    # the full forward (no past keys) and the cached step (past keys) are different graphs
    assert len(graphs) >= 2
    assert runner.num_forwards == 0  # warm-up forwards are not counted as engine work


def test_warm_up_of_a_model_without_kv_cache_compiles_only_the_full_forward(llada_checkpoint: Path) -> None:
    from vdiff.engine.model_runner import ModelRunner

    model = load_model(EngineConfig(model=str(llada_checkpoint), device="cpu", dtype="float32")).model
    model.supports_kv_cache = False  # like transformers-loaded verifiers and trust_remote_code models
    graphs: list[torch.fx.GraphModule] = []

    def recording_backend(graph_module: torch.fx.GraphModule, example_inputs: list):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    runner = ModelRunner(model, torch.device("cpu"))
    runner.forward = CompiledForward(model, backend=recording_backend)
    runner.warm_up()
    assert runner.forward.is_compiled and len(graphs) == 1 and runner.num_forwards == 0
