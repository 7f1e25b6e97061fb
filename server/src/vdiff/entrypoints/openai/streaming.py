"""What the two streaming endpoints share: admitting a request without waiting for its first committed
text, and vLLM's rules for which fields a chunk carries.

A diffusion model commits its first text only when the frontier first advances, which can take a whole
block of denoising steps. Waiting for that before sending anything leaves a client with a short read
timeout staring at nothing, so a stream waits at most ADMISSION_WAIT_S for the engine: an error found in
that time (a 400, a full queue's 429, a draining server's 503) is still an HTTP status; after it the
headers go out (chat also sends its role chunk) and later errors arrive in-band, as in vLLM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pydantic_core
from pydantic import BaseModel

from vdiff.engine.outputs import RequestOutput

ADMISSION_WAIT_S = 0.5
"""How long a stream waits for the engine to refuse it (or to commit text) before its headers go out.
Admission is settled within one engine step; the first committed text usually takes several."""


async def _first(stream: AsyncIterator[RequestOutput]) -> RequestOutput | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


class FirstOutputs:
    """Each stream's first output, pulled in the background from the moment the request is admitted."""

    def __init__(self, streams: Sequence[AsyncIterator[RequestOutput]]) -> None:
        self.streams = list(streams)
        self.tasks = [asyncio.ensure_future(_first(stream)) for stream in self.streams]

    async def admit(self, wait_s: float = ADMISSION_WAIT_S) -> None:
        """Wait up to wait_s; an error any stream raised by then is raised here (before any header)."""
        try:
            done, _ = await asyncio.wait(self.tasks, timeout=wait_s, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:
            self.cancel()
            raise
        for task in self.tasks:
            if task in done and not task.cancelled() and task.exception() is not None:
                error = task.exception()
                self.cancel()
                await self._settle()
                raise error  # type: ignore[misc]

    async def results(self) -> list[RequestOutput | None]:
        """Every stream's first output (None for a stream that ended empty); the first failure cancels
        the others (their engine requests are aborted) and is raised."""
        try:
            return list(await asyncio.gather(*self.tasks))
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        """No await: safe in a finally under a cancelled anyio scope (a cancelled pull aborts its request)."""
        for task in self.tasks:
            if not task.done():
                task.cancel()
            else:
                task.add_done_callback(_retrieve)

    async def _settle(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _retrieve(task: asyncio.Future[RequestOutput | None]) -> None:
    if not task.cancelled():
        task.exception()  # mark a failure as seen: it was raised or reported elsewhere


SET_ONLY = ("choices", "delta")
"""The levels where only the fields the server set are written; below them (logprobs, usage) all are."""


def _set_fields(model: BaseModel, exclude_none: bool) -> dict[str, object]:
    fields: dict[str, object] = {}
    for name in type(model).model_fields:
        if name not in model.model_fields_set:
            continue
        value = getattr(model, name)
        if value is None and exclude_none:
            continue
        if name == "choices":
            value = [_set_fields(choice, exclude_none) for choice in value]
        elif name == "delta":
            value = _set_fields(value, exclude_none)
        elif name == "tool_calls":  # a delta's calls: only what this chunk adds (vLLM's exclude_unset)
            value = [call.model_dump(mode="json", exclude_unset=True) for call in value]
        elif isinstance(value, BaseModel):
            value = value.model_dump(mode="json", exclude_none=exclude_none)
        fields[name] = value
    return fields


def sse_data(chunk: BaseModel, *, exclude_none: bool = False) -> str:
    """A chunk as vLLM writes it (model_dump_json(exclude_unset=True)): only the fields the server set,
    so a chat delta carries no "role": null / "content": null and a chunk no "usage": null unless usage
    was set. Nested objects (logprobs, usage) are written whole."""
    return f"data: {pydantic_core.to_json(_set_fields(chunk, exclude_none)).decode()}\n\n"
