"""AsyncLLMEngine: streaming through asyncio, errors before the first output, abort, drain, engine death."""

from __future__ import annotations

import asyncio
import time

import pytest
from vdiff.config import EngineConfig
from vdiff.engine.async_engine import AsyncLLMEngine
from vdiff.engine.step_guard import MAX_CONSECUTIVE_FORWARD_FAILURES
from vdiff.errors import (
    EngineDeadError,
    EngineDrainingError,
    QueueFullError,
    RequestFailedError,
    VdiffValidationError,
)
from vdiff.sampling_params import SamplingParams

LONG = SamplingParams(max_tokens=256, block_length=8, ignore_eos=True)


def _make(checkpoint, **config) -> AsyncLLMEngine:
    return AsyncLLMEngine.from_config(EngineConfig(model=str(checkpoint), **config))


@pytest.fixture(scope="module")
def engine(llada_checkpoint):
    client = _make(llada_checkpoint, max_num_seqs=1, max_waiting_requests=0)
    yield client
    asyncio.run(client.shutdown())


def prompt_ids(client: AsyncLLMEngine) -> list[int]:
    return client.tokenizer_info.encode("the cat sat in the hat")


async def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_generate_streams_the_frontier(engine: AsyncLLMEngine) -> None:
    outputs = [
        o
        async for o in engine.generate(
            prompt_ids(engine), SamplingParams(max_tokens=24, block_length=8), "s1"
        )
    ]
    assert len(outputs) >= 2 and outputs[-1].finished
    final = outputs[-1].outputs[0]
    assert [t for o in outputs for t in o.outputs[0].new_token_ids] == final.token_ids
    await engine.check_health()
    assert engine.is_running and not engine.errored


async def test_errors_are_raised_before_the_first_output(engine: AsyncLLMEngine) -> None:
    bad = SamplingParams(max_tokens=4, steps=10**12)  # more steps than the context has positions
    with pytest.raises(VdiffValidationError) as error:
        await engine.generate(prompt_ids(engine), bad, "bad").__anext__()
    assert error.value.param == "steps"
    with pytest.raises(VdiffValidationError):
        await engine.generate([], SamplingParams(), "empty").__anext__()
    assert engine.num_in_flight == 0


async def test_cancelled_consumer_frees_its_slot_and_queue_overflow_is_refused(
    engine: AsyncLLMEngine,
) -> None:
    stream = engine.generate(prompt_ids(engine), LONG, "long")
    first = await stream.__anext__()
    assert not first.finished and first.outputs[0].token_ids
    assert engine.num_running_seqs == 1
    with pytest.raises(QueueFullError):  # max_num_seqs=1, no waiting room
        await engine.generate(prompt_ids(engine), LONG, "overflow").__anext__()
    await stream.aclose()  # the client went away
    await wait_until(lambda: engine.num_running_seqs == 0 and not engine.engine.has_unfinished_requests())
    outputs = [o async for o in engine.generate(prompt_ids(engine), SamplingParams(max_tokens=4), "after")]
    assert outputs[-1].finished


async def test_abort_ends_the_stream(engine: AsyncLLMEngine) -> None:
    outputs = []
    async for output in engine.generate(prompt_ids(engine), LONG, "to-abort"):
        outputs.append(output)
        if len(outputs) == 1:
            await engine.abort("to-abort")
    assert outputs[-1].finished and outputs[-1].outputs[0].finish_reason == "abort"
    assert len(outputs[-1].outputs[0].token_ids) < LONG.max_tokens


async def test_concurrent_clients_batch_then_drain_refuses_and_aborts(llada_checkpoint) -> None:
    client = _make(llada_checkpoint)
    try:
        params = SamplingParams(max_tokens=32, block_length=8, ignore_eos=True)

        async def final(request_id: str):
            return [o async for o in client.generate(prompt_ids(client), params, request_id)][-1]

        together = await asyncio.gather(*(final(f"c{i}") for i in range(3)))
        assert client.stats.max_batch_size >= 2  # concurrent clients share forwards
        assert (
            together[0].outputs[0].token_ids
            == together[1].outputs[0].token_ids
            == together[2].outputs[0].token_ids
        )

        stream = client.generate(prompt_ids(client), LONG, "straggler")
        await stream.__anext__()
        await client.drain(grace_period_s=0.0)
        rest = [o async for o in stream]
        assert rest[-1].finished and rest[-1].outputs[0].finish_reason == "abort"
        with pytest.raises(EngineDrainingError):
            await client.generate(prompt_ids(client), SamplingParams(), "late").__anext__()
    finally:
        await client.shutdown()
    assert not client.is_running


async def test_a_model_that_keeps_failing_kills_the_engine(llada_checkpoint) -> None:
    """One failing forward fails its request (RequestFailedError); when every forward fails for
    MAX_CONSECUTIVE_FORWARD_FAILURES steps in a row the model is broken and the loop dies."""
    client = _make(llada_checkpoint)
    try:

        def broken_forward(*args, **kwargs):
            raise RuntimeError("device lost")

        client.engine.runner.model.forward = broken_forward  # fault injection: every forward fails
        errors = []
        for attempt in range(MAX_CONSECUTIVE_FORWARD_FAILURES + 1):
            with pytest.raises((RequestFailedError, EngineDeadError)) as error:
                async for _ in client.generate(
                    prompt_ids(client), SamplingParams(max_tokens=8), f"v{attempt}"
                ):
                    pass
            errors.append(type(error.value))
            if client.errored:
                break
        assert errors[0] is RequestFailedError
        assert client.errored and not client.is_running
        with pytest.raises(EngineDeadError):
            await client.check_health()
        with pytest.raises(EngineDeadError):
            await client.generate(prompt_ids(client), SamplingParams(), "next").__anext__()
    finally:
        await client.shutdown()
