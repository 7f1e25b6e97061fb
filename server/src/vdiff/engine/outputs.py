"""What the engine reports back: per step, per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A committed token's log-probability under the model's raw distribution at the step that committed
    it (after classifier-free guidance, before penalties, temperature or filters), and the most likely
    tokens there (as many as the request's `logprobs`, most likely first)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    rank: int | None = None
    """1 + the tokens more likely than this one (prompt scoring computes it, as vLLM reports it)."""


@dataclass(slots=True)
class CompletionOutput:
    """One of the n generations of a request, as committed so far."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    """All committed tokens of the answer so far (left-contiguous, never retracted, EOS excluded)."""
    new_token_ids: list[int] = field(default_factory=list)
    """Tokens the commit frontier advanced by in the step that produced this output."""
    text: str = ""
    new_text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: int | str | None = None
    logprobs: list[TokenLogprob] | None = None
    """Aligned with token_ids when the request asked for logprobs, else None."""
    new_logprobs: list[TokenLogprob] | None = None
    """Aligned with new_token_ids."""
    stop_logprob: TokenLogprob | None = None
    """The end token's (EOS or a stop token id) that finished the choice, which token_ids leave out; vLLM
    lists it with the generated tokens (lm-eval's echo scoring slices it off)."""
    canvas_frames: list[Any] | None = None
    """vdiff: the CanvasFrames (engine/canvas_trace.py) of the steps since the last output, when the
    request asked for them (SamplingParams.record_canvas), else None."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestStats:
    """Per-request counters the metrics layer reads once the request finishes."""

    arrival_time: float = 0.0
    scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    num_forwards: int = 0
    num_denoising_steps: int = 0


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    stats: RequestStats = field(default_factory=RequestStats)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    """Per prompt token when the request asked for prompt_logprobs (None for the first: nothing predicts
    it), filled in before the first generated token is reported."""
