"""stream_canvas: a streaming request that asks for it gets the canvas of every denoising step in-band.

vdiff's extension (no upstream field): `"stream_canvas": true` on a streaming /v1/chat/completions or
/v1/completions request (openai client: extra_body). Each CanvasFrame (engine/canvas_trace.py) becomes
one extra chunk of the same stream, before the text chunk of its step: the endpoint's chunk object with
`"choices": []` and a `"vdiff_canvas"` object (docs/api-reference.md, "Watching the canvas"). A client
that reads choices skips it as it skips the usage chunk; the openai client exposes it as
`chunk.vdiff_canvas`. Off by default: an ordinary stream is byte for byte what it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic_core
from pydantic import BaseModel

from vdiff.engine.outputs import RequestOutput
from vdiff.errors import VdiffValidationError

MAX_CANVAS_TOKENS = 4096
"""Largest max_tokens a watched request may ask for: a frame lists at most this many positions (plus a
block's rounding), so one event stays under a few hundred kB."""
FIELD = "vdiff_canvas"
HEADER_FIELDS = ("id", "object", "created", "model")


def wants_canvas(request: Any, max_tokens: int) -> bool:
    """The request's stream_canvas, checked: streaming only, and a bounded canvas."""
    if not request.stream_canvas:
        return False
    if not request.stream:
        raise VdiffValidationError(
            "stream_canvas needs stream: true (frames travel on the stream)", "stream_canvas"
        )
    if max_tokens > MAX_CANVAS_TOKENS:
        raise VdiffValidationError(
            f"stream_canvas is limited to max_tokens <= {MAX_CANVAS_TOKENS} (got {max_tokens})",
            "stream_canvas",
        )
    return True


def frame_chunks(chunk: Callable[..., BaseModel], output: RequestOutput, index_offset: int = 0) -> list[str]:
    """One SSE event per frame of the output's choices (none for a request without stream_canvas)."""
    events = []
    for choice in output.outputs:
        if not choice.canvas_frames:
            continue
        header = chunk(choices=[]).model_dump(mode="json", include=set(HEADER_FIELDS))
        for frame in choice.canvas_frames:
            body = {**header, "choices": [], FIELD: {"index": index_offset + choice.index, **frame.to_json()}}
            events.append(f"data: {pydantic_core.to_json(body).decode()}\n\n")
    return events
