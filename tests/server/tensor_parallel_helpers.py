"""Run a function on 2 gloo ranks in fresh processes (the layer-numerics tests), loopback only."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(function: Callable[..., Any], rank: int, world: int, port: int, args: tuple, out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        result = function(rank, world, *args)
        dist.destroy_process_group()
        torch.save({"result": result}, out)
    except BaseException:
        torch.save({"error": traceback.format_exc()}, out)
        os._exit(1)


def run_ranks(function: Callable[..., Any], args: tuple, tmp_path: Path, world: int = 2) -> list[Any]:
    """function(rank, world, *args) on `world` processes in one gloo group; each rank's return value."""
    context = mp.get_context("spawn")
    port = free_port()
    outs = [tmp_path / f"rank{rank}.pt" for rank in range(world)]
    procs = [
        context.Process(target=_entry, args=(function, rank, world, port, args, outs[rank]))
        for rank in range(world)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        if proc.is_alive():
            proc.kill()
    results = []
    for out in outs:
        payload = torch.load(out) if out.exists() else {"error": "no result"}
        assert "error" not in payload, payload["error"]
        results.append(payload["result"])
    return results


def build_layers() -> torch.nn.Module:
    """One of each parallel layer plus two LLaDA blocks (key/value heads split, and replicated)."""
    from vdiff.distributed.layers import (
        ColumnParallelLinear,
        ParallelLMHead,
        RowParallelLinear,
        VocabParallelEmbedding,
    )
    from vdiff.models.llada import LLaDABlock, LLaDAConfig

    def block(n_kv_heads: int) -> LLaDABlock:
        config = LLaDAConfig.from_hf(
            {"d_model": 16, "n_heads": 4, "n_kv_heads": n_kv_heads, "n_layers": 1, "mlp_hidden_size": 12,
             "vocab_size": 11, "include_qkv_bias": True}
        )  # fmt: skip
        return LLaDABlock(config)

    layers = torch.nn.Module()
    layers.column = ColumnParallelLinear(8, 6, True)
    layers.row = RowParallelLinear(6, 5, True)
    layers.embedding = VocabParallelEmbedding(11, 4)  # 11 rows: the last rank's share is padded
    layers.head = ParallelLMHead(4, 11, True)
    layers.gqa_block = block(2)
    layers.mqa_block = block(1)
    return layers


def layer_outputs(rank: int, world: int, weights: str, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    from vdiff.distributed.state import TensorParallel, build_sharded
    from vdiff.models.layers import rotary_cos_sin
    from vdiff.models.loader import load_weights

    tp = TensorParallel(rank, world)
    with torch.device("meta"), build_sharded(tp):
        layers = build_layers()
    load_weights(layers, [Path(weights)], torch.float32, torch.device("cpu"))
    x8 = inputs["x8"]
    part = 6 // world
    cos, sin = rotary_cos_sin(inputs["positions"], 4, 10000.0)
    out: dict[str, Any] = {"param_bytes": sum(p.numel() * p.element_size() for p in layers.parameters())}
    with torch.inference_mode():
        out["column"] = layers.column(x8)
        out["row"] = layers.row(inputs["x6"][..., rank * part : (rank + 1) * part])
        out["embedding"] = layers.embedding(inputs["ids"])
        out["head"] = layers.head(inputs["h4"])
        out["tied"] = layers.embedding.project(inputs["h4"])
        for name in ("gqa_block", "mqa_block"):
            hidden, (k, v) = getattr(layers, name)(inputs["x16"], cos, sin, None, None, False)
            out[name] = hidden
            out[name + "_kv"] = (k, v)
    return out
