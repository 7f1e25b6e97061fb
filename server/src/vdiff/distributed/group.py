"""Rank 0's side of the tensor-parallel group: start the workers, load, forward, watch, stop.

`vdiff serve` (or any engine built with tensor_parallel_size N > 1) is rank 0. It starts N-1 worker
processes (`python -m vdiff.distributed.worker`) that meet it through a TCPStore on 127.0.0.1 and a free
port, joins them in one torch.distributed group (NCCL on CUDA with a gloo group for the messages, gloo
on CPU), then drives them with broadcast messages (messages.py). A watcher thread notices a worker that
exits: from then on every forward and `check_alive` raise ParallelGroupLost, the engine loop dies, /health
turns 503 and `vdiff serve` exits non-zero. Workers die with rank 0 (PR_SET_PDEATHSIG and a parent watch).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from vdiff.distributed.layers import TP_FLAG
from vdiff.distributed.messages import (
    LoadModel,
    LoadStatus,
    Ping,
    RunForward,
    Stop,
    output_handle,
    parameter_bytes,
)
from vdiff.distributed.mirror import Mirror, MirroredTensor
from vdiff.distributed.state import TensorParallel, build_sharded
from vdiff.errors import VdiffValidationError
from vdiff.models.base import ModelOutput

if TYPE_CHECKING:
    from vdiff.config import EngineConfig
    from vdiff.models.loader import LoadedModel

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 600.0
WATCH_INTERVAL_S = 0.2
STOP_GRACE_S = 10.0
HEARTBEAT_S = 60.0
"""An idle group gets a Ping this often: the workers wait inside a broadcast, which has a timeout."""
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
LOST_EXIT_GRACE_S = 15.0
"""After a worker died, how long `vdiff serve` may take to exit by itself before it is forced to."""
ENV_RANK, ENV_WORLD, ENV_PORT, ENV_BACKEND = (
    "VDIFF_TP_RANK",
    "VDIFF_TP_WORLD_SIZE",
    "VDIFF_TP_PORT",
    "VDIFF_TP_BACKEND",
)


class ParallelGroupLost(BaseException):
    """A worker died or a collective failed: the group is out of step for good.

    A BaseException so that the step guard, which contains per-request failures, lets it through: no
    request can be served any more, the engine loop must die."""


def check_devices(device: str, world_size: int) -> str:
    """The collective backend for --device under N ranks; refuses N beyond the devices."""
    if device == "mps" or (
        device == "auto" and not torch.cuda.is_available() and torch.backends.mps.is_available()
    ):
        raise VdiffValidationError(
            f"{TP_FLAG} {world_size}: tensor parallelism runs on CUDA or CPU, not MPS", TP_FLAG
        )
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        count = torch.cuda.device_count()
        if world_size > count:
            raise VdiffValidationError(
                f"{TP_FLAG} {world_size} exceeds the {count} CUDA device(s) visible (one rank per GPU)",
                TP_FLAG,
            )
        return "nccl"
    cores = os.cpu_count() or 1
    if world_size > cores:
        raise VdiffValidationError(
            f"{TP_FLAG} {world_size} exceeds the {cores} CPU core(s) of this machine (one rank per core "
            "on CPU)",
            TP_FLAG,
        )
    return "gloo"


class WorkerGroup:
    def __init__(self, world_size: int, backend: str) -> None:
        self.world_size = world_size
        self.backend = backend
        self.state = TensorParallel(0, world_size)
        self.mirror = Mirror()
        self.control: Any = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.lost: str | None = None
        self.exit_process_on_loss = False
        self._keys = itertools.count()
        self._forward_ids = itertools.count()
        self._stopping = False
        self._lock = threading.Lock()
        self.step_lock = threading.RLock()
        """Held across every message and the collectives that follow it (forwards, load reports)."""
        self._last_sent = time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        store = dist.TCPStore("127.0.0.1", 0, self.world_size, is_master=True, wait_for_workers=False,
                              timeout=timedelta(seconds=STARTUP_TIMEOUT_S))  # fmt: skip
        env = dict(os.environ)
        env.update({ENV_WORLD: str(self.world_size), ENV_PORT: str(store.port), ENV_BACKEND: self.backend})
        for rank in range(1, self.world_size):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "vdiff.distributed.worker"], env={**env, ENV_RANK: str(rank)}
                )
            )
        logger.info(
            "tensor parallel: started %d worker(s) (pids %s), %s on 127.0.0.1:%d",
            len(self.procs),
            [proc.pid for proc in self.procs],
            self.backend,
            store.port,
        )
        try:
            self._wait_for_workers(store)
            if self.backend == "nccl":  # pragma: no cover - needs several GPUs
                torch.cuda.set_device(0)
            dist.init_process_group(self.backend, store=store, rank=0, world_size=self.world_size,
                                    timeout=COLLECTIVE_TIMEOUT)  # fmt: skip
            self.control = dist.new_group(backend="gloo") if self.backend == "nccl" else None
        except BaseException:
            self.shutdown()
            raise
        self.state = TensorParallel(0, self.world_size, None)
        threading.Thread(target=self._watch, name="vdiff-tp-watch", daemon=True).start()

    def _wait_for_workers(self, store: dist.TCPStore) -> None:
        keys = [f"vdiff/up/{rank}" for rank in range(1, self.world_size)]
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not store.check(keys):
            self._raise_if_exited("during startup")
            if time.monotonic() > deadline:
                raise VdiffValidationError(
                    f"{TP_FLAG}: the workers did not start in {STARTUP_TIMEOUT_S:.0f} s", TP_FLAG
                )
            time.sleep(0.05)

    def _raise_if_exited(self, when: str) -> None:
        for rank, proc in enumerate(self.procs, start=1):
            code = proc.poll()
            if code is not None:
                raise VdiffValidationError(
                    f"tensor-parallel worker rank {rank} (pid {proc.pid}) exited with status {code} {when} "
                    "(its log is above)",
                    TP_FLAG,
                )

    def _watch(self) -> None:
        while not self._stopping:
            for rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                if code is not None and not self._stopping and self.lost is None:
                    self.lose(
                        f"tensor-parallel worker rank {rank} (pid {proc.pid}) exited with status {code}"
                    )
            if self.lost is None and time.monotonic() - self._last_sent > HEARTBEAT_S:
                self._ping()
            time.sleep(WATCH_INTERVAL_S)

    def _ping(self) -> None:
        if not self.step_lock.acquire(blocking=False):  # a message is on its way anyway
            return
        try:
            if not self._stopping:
                with contextlib.suppress(ParallelGroupLost):
                    self.send(Ping())
        finally:
            self.step_lock.release()

    def lose(self, reason: str) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = reason
        logger.error("%s: the tensor-parallel group is lost, the engine stops", reason)
        if self.exit_process_on_loss:
            threading.Thread(target=self._exit_if_still_running, daemon=True).start()

    def _exit_if_still_running(self) -> None:
        """`vdiff serve` normally exits by itself (health 503, status 1); if a collective hangs, force it."""
        time.sleep(LOST_EXIT_GRACE_S)
        if self._stopping:
            return
        logger.error(
            "the server did not stop %.0f s after losing a worker: exiting with status 1", LOST_EXIT_GRACE_S
        )
        self._stop_processes(grace_s=1.0)
        os._exit(1)

    def check_alive(self) -> None:
        if self.lost is not None:
            raise ParallelGroupLost(self.lost)

    def shutdown(self) -> None:
        """Stop every worker (a Stop message when the group is in step, then SIGTERM, then SIGKILL)."""
        if self._stopping:
            return
        self._stopping = True
        if self.lost is None and self.state.is_parallel:
            try:
                with self.step_lock:
                    self.send(Stop())
            except BaseException:
                logger.warning("could not send the workers the stop message; terminating them")
        self._stop_processes(STOP_GRACE_S)
        if dist.is_initialized() and (self.lost is None or self.backend == "gloo"):
            try:
                dist.destroy_process_group()
            except Exception:
                logger.debug("destroy_process_group failed", exc_info=True)

    def _stop_processes(self, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------ messages
    def send(self, message: object) -> None:
        self.check_alive()
        self._last_sent = time.monotonic()
        try:
            dist.broadcast_object_list([message], src=0, group=self.control)
        except Exception as error:
            self.lose(f"a tensor-parallel broadcast failed: {error!r}")
            raise ParallelGroupLost(self.lost) from error

    def gather_status(self, status: LoadStatus) -> list[LoadStatus]:
        statuses: list[Any] = [None] * self.world_size
        try:
            dist.gather_object(status, statuses, dst=0, group=self.control)
        except Exception as error:
            self.lose(f"a tensor-parallel worker did not report its load: {error!r}")
            raise ParallelGroupLost(self.lost) from error
        return statuses

    def next_key(self) -> int:
        return next(self._keys)

    def next_forward_id(self) -> int:
        return next(self._forward_ids)


class ParallelForward:
    """The model runner's forward under tensor parallelism (rank 0): broadcast, run the own shard,
    return the gathered logits and the keys/values as mirrored handles."""

    def __init__(self, group: WorkerGroup, key: int, model: torch.nn.Module) -> None:
        self.group, self.key, self.model = group, key, model
        self.rank_parameter_bytes: list[int] = []
        """Bytes of weights each rank holds (from the load reports)."""

    def check_alive(self) -> None:
        self.group.check_alive()

    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: list[tuple[MirroredTensor, MirroredTensor]] | None = None,
        use_cache: bool = False,
        logits_indices: torch.Tensor | None = None,
    ) -> ModelOutput:
        group = self.group
        forward_id = group.next_forward_id()
        message = RunForward(
            key=self.key,
            forward_id=forward_id,
            ops=group.mirror.take_ops(),
            input_ids=input_ids.cpu(),
            position_ids=position_ids.cpu(),
            attention_mask=None if attention_mask is None else attention_mask.cpu(),
            past=None if past_key_values is None else [(k.handle, v.handle) for k, v in past_key_values],
            use_cache=use_cache,
            logits_indices=None if logits_indices is None else logits_indices.cpu(),
        )
        local_past = None if past_key_values is None else [(k.local, v.local) for k, v in past_key_values]
        with group.step_lock:
            group.send(message)
            try:
                output = self.model(
                    input_ids,
                    position_ids,
                    attention_mask=attention_mask,
                    past_key_values=local_past,
                    use_cache=use_cache,
                    logits_indices=logits_indices,
                )
            except Exception as error:  # the workers are inside collectives rank 0 will never join
                group.lose(f"rank 0 failed inside a tensor-parallel forward: {error!r}")
                raise ParallelGroupLost(group.lost) from error
        kv = None
        if output.past_key_values is not None:
            wrap = group.mirror.wrap
            kv = [
                (
                    wrap(k, output_handle(forward_id, layer, False)),
                    wrap(v, output_handle(forward_id, layer, True)),
                )
                for layer, (k, v) in enumerate(output.past_key_values)
            ]
        return ModelOutput(logits=output.logits, past_key_values=kv)  # type: ignore[arg-type]


_GROUP: WorkerGroup | None = None


def current_group() -> WorkerGroup | None:
    return _GROUP


def shutdown_workers() -> None:
    """Stop this process's workers (no-op without any); a later tensor-parallel load starts new ones."""
    global _GROUP
    group, _GROUP = _GROUP, None
    if group is not None:
        group.shutdown()


atexit.register(shutdown_workers)


_exit_process_on_loss = False


def exit_process_on_worker_loss() -> None:
    """`vdiff serve`: a lost worker ends the process (status 1) even if a collective hangs."""
    global _exit_process_on_loss
    _exit_process_on_loss = True
    if _GROUP is not None:
        _GROUP.exit_process_on_loss = True


def _ensure_group(world_size: int, backend: str) -> WorkerGroup:
    global _GROUP
    if _GROUP is not None:
        if _GROUP.world_size != world_size:
            raise VdiffValidationError(
                f"{TP_FLAG} {world_size}: this process already runs a group of {_GROUP.world_size}", TP_FLAG
            )
        _GROUP.check_alive()
        return _GROUP
    group = WorkerGroup(world_size, backend)
    group.exit_process_on_loss = _exit_process_on_loss
    group.start()
    _GROUP = group
    return group


def engine_config_kwargs(config: EngineConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def check_parallel_model(config: EngineConfig) -> None:
    """Refuse before any worker starts: a family without tensor parallelism, or N that does not divide
    the heads / MLP / experts (building the rank-0 shard on the meta device checks every layer)."""
    from vdiff.models.loader import read_json, resolve_model_path
    from vdiff.models.registry import get_family

    world = config.tensor_parallel_size
    model_dir = resolve_model_path(config.model, config.revision, config.download_dir)
    hf_config = read_json(model_dir / "config.json")
    family = get_family(hf_config.get("model_type"), config.trust_remote_code).for_checkpoint(
        hf_config, config.model
    )
    # declared by the class itself: a subclass with other layers (e.g. a new family) does not inherit it
    if not vars(family.model_class or object).get("supports_tensor_parallel", False):
        raise VdiffValidationError(
            f"{TP_FLAG} {world}: the {family.name} family has no tensor-parallel implementation yet "
            "(LLaDA, Dream, SDAR, LLaDA2, LLaDA-MoE and the Qwen2 APD verifier have one)",
            TP_FLAG,
        )
    if config.quantization:
        raise VdiffValidationError(f"{TP_FLAG} {world} cannot be combined with --quantization yet", TP_FLAG)
    with torch.device("meta"), build_sharded(TensorParallel(0, world)):
        family.build(hf_config)


def load_parallel(config: EngineConfig) -> LoadedModel:
    """Load `config.model` sharded over the group (started on first use): every rank its slices."""
    from vdiff.models.loader import load_model

    world = config.tensor_parallel_size
    check_parallel_model(config)
    group = _ensure_group(world, check_devices(config.device, world))
    key = group.next_key()
    error: Exception | None = None
    loaded = None
    with group.step_lock:
        group.send(LoadModel(key, engine_config_kwargs(config)))
        try:
            loaded = load_model(config, tp=group.state)
        except Exception as exc:  # still answer the gather, so the workers stay in step
            error = exc
        own = LoadStatus(error=repr(error)) if error is not None or loaded is None else None
        statuses = group.gather_status(own or LoadStatus(parameter_bytes=parameter_bytes(loaded.model)))
    if error is not None:
        raise error
    for rank, status in enumerate(statuses):
        if status.error is not None:
            raise VdiffValidationError(
                f"tensor-parallel worker rank {rank} could not load {config.model}: {status.error}", TP_FLAG
            )
    assert loaded is not None
    forward = ParallelForward(group, key, loaded.model)
    forward.rank_parameter_bytes = [status.parameter_bytes for status in statuses]
    loaded.model.parallel_forward = forward
    logger.info(
        "tensor parallel: %s loaded on %d ranks, MiB of weights per rank: %s",
        config.model,
        world,
        ", ".join(f"{size / 2**20:.1f}" for size in forward.rank_parameter_bytes),
    )
    return loaded
