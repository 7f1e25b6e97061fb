"""Per-generation state: the canvas, its blocks, the commit frontier and what has been reported."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from vdiff.engine.outputs import RequestStats
from vdiff.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True)
class Block:
    """A half-open range [start, end) of generation positions decoded together, with its step budget."""

    start: int
    end: int
    num_steps: int

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_blocks(
    max_tokens: int,
    block_length: int | None,
    num_steps: int | None,
    max_generation_len: int,
    align_to_prompt_len: int | None = None,
) -> list[Block]:
    """Lay out the generation canvas and spread the step budget over its blocks.

    - block = min(block_length, max_tokens) (None = one block over the whole answer);
    - the canvas is rounded up to a whole number of blocks (capped at max_generation_len, in which
      case the last block is shorter); positions past max_tokens are decoded but never reported;
    - steps default to one per canvas position; they are split evenly over the blocks with the
      remainder going to the earliest blocks, and every block gets at least one step.
    With block_length | max_tokens and num_blocks | steps this is exactly LLaDA's `generate` layout.

    align_to_prompt_len (block-causal models: SDAR, LLaDA2, Fast-dLLM v2) lays the blocks at absolute
    canvas positions instead: the first block completes the prompt's partial block (it is shorter,
    block - prompt_len % block), every later block starts at a multiple of block, and the canvas ends at
    prompt_len + max_tokens rounded up to a multiple of block, as the published generate code does.
    """
    if align_to_prompt_len is not None and block_length is not None:
        return _plan_aligned(max_tokens, block_length, num_steps, max_generation_len, align_to_prompt_len)
    block = max_tokens if block_length is None else min(block_length, max_tokens)
    num_blocks = -(-max_tokens // block)
    canvas_len = min(num_blocks * block, max(max_generation_len, max_tokens))
    total_steps = canvas_len if num_steps is None else num_steps
    base, remainder = divmod(total_steps, num_blocks)
    blocks = []
    for index in range(num_blocks):
        start = index * block
        steps = max(1, base + (1 if index < remainder else 0))
        blocks.append(Block(start, min(start + block, canvas_len), steps))
    return blocks


def _plan_aligned(
    max_tokens: int, block: int, num_steps: int | None, max_generation_len: int, prompt_len: int
) -> list[Block]:
    canvas_end = -(-(prompt_len + max_tokens) // block) * block
    canvas_len = min(canvas_end - prompt_len, max(max_generation_len, max_tokens))
    bounds = [0, *range(block - prompt_len % block, canvas_len, block), canvas_len]
    num_blocks = len(bounds) - 1
    total_steps = canvas_len if num_steps is None else num_steps
    base, remainder = divmod(total_steps, num_blocks)
    return [
        Block(start, end, max(1, base + (1 if index < remainder else 0)))
        for index, (start, end) in enumerate(itertools.pairwise(bounds))
    ]


@dataclass(eq=False)
class Sequence:
    """One of the n generations of a request.

    Generation positions are counted from the end of the prompt (gen position g is canvas index
    prompt_len + g). `frontier` is the number of leading generation positions that are committed: the
    tokens left of it never change, which is what streaming reports.
    """

    seq_id: int
    request_id: str
    index: int
    prompt_token_ids: list[int]
    params: SamplingParams
    """Resolved: every diffusion knob filled in (see LLMEngine.resolve_params)."""
    blocks: list[Block]
    mask_token_id: int
    generator: torch.Generator
    policy_name: str
    canvas: torch.Tensor = field(init=False)
    """[prompt_len + gen_len] int64 on the CPU; masked positions hold mask_token_id."""
    status: SequenceStatus = SequenceStatus.WAITING
    block_index: int = 0
    step_in_block: int = 0
    frontier: int = 0
    output_token_ids: list[int] = field(default_factory=list)
    """The answer as reported so far: committed, left-contiguous, end token excluded."""
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    text: str = ""
    """Detokenized output_token_ids as reported so far (stop strings already cut off)."""
    stats: RequestStats = field(default_factory=RequestStats)
    decoding_state: Any = None
    """Owned by the sequence's DecodingPolicy: KV-cache handles, APD verifier state, ..."""
    detokenizer_state: Any = None
    """Owned by the OutputProcessor: incremental detokenization offsets."""
    prompt_logprobs: list[Any] | None = None
    """TokenLogprob per prompt position (None for position 0) while the prompt is scored."""
    num_scored: int = 1
    """Prompt positions scored so far (position 0 has nothing before it)."""
    token_logprobs: dict[int, Any] | None = None
    """Generation position -> TokenLogprob of its committed token, when the request asked for logprobs."""
    needs_logits_processing: bool = False
    """Any penalty, bias, min_p, min_tokens, allowed or bad token is set (decided once, at admission)."""
    logits_rules: Any = None
    """The params as the logits rules use them (logits_processors.SeqRules), built on the first step."""
    canvas_frames: list[Any] | None = None
    """CanvasFrames not yet reported, when params.record_canvas (engine/canvas_trace.py), else None."""
    grammar: Any = None
    """vdiff.structured.GrammarMatcher of a constrained sequence (structured outputs): its state is the
    committed left-contiguous answer; policies commit from the frontier (engine/decoding/constrained.py)."""

    def __post_init__(self) -> None:
        gen = torch.full((self.gen_len,), self.mask_token_id, dtype=torch.int64)
        self.canvas = torch.cat([torch.tensor(self.prompt_token_ids, dtype=torch.int64), gen])
        self.stats.arrival_time = time.time()
        if self.params.record_canvas:
            self.canvas_frames = []

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def gen_len(self) -> int:
        return self.blocks[-1].end

    @property
    def max_tokens(self) -> int:
        return self.params.max_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def is_scoring(self) -> bool:
        return self.prompt_logprobs is not None and self.num_scored < self.prompt_len

    @property
    def current_block(self) -> Block | None:
        return self.blocks[self.block_index] if self.block_index < len(self.blocks) else None

    def visible_length(self, block: Block) -> int:
        """Canvas positions a windowed policy shows the model while decoding `block`: the prompt, the
        blocks before it and `canvas_window` positions from its start (the whole canvas for -1)."""
        window = self.params.canvas_window
        if window is None or window < 0:
            return self.canvas.shape[0]
        return self.prompt_len + min(self.gen_len, max(block.start + window, block.end))

    def masked_positions(self, start: int, end: int) -> torch.Tensor:
        """Canvas indices of the still-masked generation positions in [start, end)."""
        offset = self.prompt_len
        region = self.canvas[offset + start : offset + end]
        return (region == self.mask_token_id).nonzero().flatten() + offset + start

    def commit(self, canvas_indices: torch.Tensor, token_ids: torch.Tensor) -> None:
        self.canvas[canvas_indices.cpu()] = token_ids.to(device="cpu", dtype=torch.int64)

    def advance_frontier(self) -> list[int]:
        """Move the frontier over newly committed positions; returns their tokens (left to right)."""
        offset = self.prompt_len
        if self.frontier >= self.gen_len or int(self.canvas[offset + self.frontier]) == self.mask_token_id:
            return []
        region = self.canvas[offset + self.frontier : offset + self.gen_len]
        masked = (region == self.mask_token_id).nonzero()
        advance = int(masked[0]) if len(masked) else len(region)
        new_tokens = region[:advance].tolist()
        self.frontier += advance
        return new_tokens

    def finish(self, reason: str, stop_reason: int | str | None = None) -> None:
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
        self.stop_reason = stop_reason
        self.stats.finished_time = time.time()
