"""A tensor-parallel worker (rank >= 1): `python -m vdiff.distributed.worker`, started by rank 0.

It loads the slices rank 0 names (LoadModel) and runs every forward rank 0 broadcasts (RunForward)
until Stop. It never samples, schedules or serves HTTP. It exits when rank 0 dies (PR_SET_PDEATHSIG,
and a thread that watches the parent), when a collective fails, or on any error in a forward: rank 0
then sees a lost worker and stops the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from vdiff.distributed.group import ENV_BACKEND, ENV_PORT, ENV_RANK, ENV_WORLD, STARTUP_TIMEOUT_S
from vdiff.distributed.messages import (
    LoadModel,
    LoadStatus,
    Ping,
    RunForward,
    Stop,
    output_handle,
    parameter_bytes,
)
from vdiff.distributed.mirror import Replica
from vdiff.distributed.state import TensorParallel

logger = logging.getLogger("vdiff.distributed.worker")

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    parent = os.getppid()
    with contextlib.suppress(Exception):  # Linux only; the watch thread covers the rest
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="vdiff-parent-watch", daemon=True).start()


def _receive(control: object) -> object:
    box: list[object] = [None]
    dist.broadcast_object_list(box, src=0, group=control)
    return box[0]


def _load(message: LoadModel, state: TensorParallel) -> tuple[torch.nn.Module, torch.device]:
    from vdiff.config import EngineConfig
    from vdiff.models.loader import load_model

    loaded = load_model(EngineConfig(**message.config), tp=state)
    return loaded.model, loaded.device


def _forward(message: RunForward, model: torch.nn.Module, device: torch.device, replica: Replica) -> None:
    with torch.inference_mode():
        replica.apply(message.ops)
        past = None
        if message.past is not None:
            past = [(replica.tensors[k], replica.tensors[v]) for k, v in message.past]
        output = model(
            message.input_ids.to(device),
            message.position_ids.to(device),
            attention_mask=None if message.attention_mask is None else message.attention_mask.to(device),
            past_key_values=past,
            use_cache=message.use_cache,
            logits_indices=None if message.logits_indices is None else message.logits_indices.to(device),
        )
        for layer, (k, v) in enumerate(output.past_key_values or ()):
            replica.store(output_handle(message.forward_id, layer, False), k)
            replica.store(output_handle(message.forward_id, layer, True), v)


def serve(state: TensorParallel, control: object) -> int:
    models: dict[int, tuple[torch.nn.Module, torch.device]] = {}
    replica = Replica()
    while True:
        message = _receive(control)
        if isinstance(message, Stop):
            logger.debug("stop: %s", message.reason)
            return 0
        if isinstance(message, Ping):
            continue
        if isinstance(message, LoadModel):
            try:
                models[message.key] = _load(message, state)
                status = LoadStatus(parameter_bytes=parameter_bytes(models[message.key][0]))
            except Exception as error:  # reported to rank 0, which refuses to start
                logger.exception("loading failed")
                status = LoadStatus(error=repr(error))
            dist.gather_object(status, None, dst=0, group=control)
        elif isinstance(message, RunForward):
            model, device = models[message.key]
            _forward(message, model, device, replica)
        else:
            raise TypeError(f"unknown message {type(message).__name__}")


def main() -> None:
    rank, world = int(os.environ[ENV_RANK]), int(os.environ[ENV_WORLD])
    port, backend = int(os.environ[ENV_PORT]), os.environ[ENV_BACKEND]
    logging.basicConfig(
        level=os.environ.get("VDIFF_LOGGING_LEVEL", "INFO").upper(),
        format=f"%(levelname)s %(asctime)s rank{rank} %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: rank 0 drains
    if backend == "nccl":  # pragma: no cover - needs several GPUs
        torch.cuda.set_device(rank)
    timeout = timedelta(seconds=STARTUP_TIMEOUT_S)
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=timeout)
    store.set(f"vdiff/up/{rank}", str(os.getpid()))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    control = dist.new_group(backend="gloo") if backend == "nccl" else None
    try:
        code = serve(TensorParallel(rank, world, None), control)
    except Exception:
        logger.exception("tensor-parallel worker rank %d failed", rank)
        os._exit(1)
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
    sys.exit(code)


if __name__ == "__main__":
    main()
