"""Canvas frames: what one denoising step did to the canvas of a sequence that asked to be watched.

A request with SamplingParams.record_canvas gets one CanvasFrame per denoising step of each of its
sequences: the positions committed at that step (token id, text, confidence), the positions still masked,
the block boundaries and what the policy did (APD: positions drafted and the accepted run; threshold: the
commits and how many cleared τ). The engine snapshots a traced sequence's canvas before the policies
commit and diffs it after (so no policy needs to report anything); untraced sequences cost one boolean
check per step.

Confidence is the probability of the committed token under the model's raw distribution at the step that
committed it (softmax of the logits after classifier-free guidance, before penalties, temperature or
filters), the same distribution logprobs report.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch

from vdiff.engine.decoding.sampling import guided_logits

MAX_TOKEN_TEXT = 32
"""Characters of a token's text a frame carries (a longer piece is cut): a frame stays bounded."""


@dataclass(frozen=True, slots=True)
class CommittedToken:
    position: int
    """Generation position (0 = the first answer position)."""
    token_id: int
    text: str
    confidence: float | None


@dataclass(frozen=True, slots=True)
class CanvasFrame:
    step: int
    """The sequence's denoising step (1 = its first)."""
    policy: str
    canvas_length: int
    """Generation positions on the canvas (max_tokens rounded up to whole blocks)."""
    answer_end: int
    """Positions from here on can no longer be part of the answer: max_tokens, or an end token committed."""
    block: int
    """Index of the block this step decoded (for APD: the block of its first commit)."""
    blocks: tuple[tuple[int, int], ...]
    """[start, end) of every block."""
    committed: tuple[CommittedToken, ...]
    masked: tuple[tuple[int, int], ...]
    """[start, end) runs of the positions still masked after this step."""
    num_masked: int
    """Masked positions left of answer_end: 0 once the answer is decided."""
    action: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The wire form (docs/api-reference.md, "Watching the canvas")."""
        return {
            "step": self.step,
            "policy": self.policy,
            "canvas_length": self.canvas_length,
            "answer_end": self.answer_end,
            "block": self.block,
            "blocks": [list(block) for block in self.blocks],
            "committed": [
                {"position": t.position, "id": t.token_id, "text": t.text, "confidence": t.confidence}
                for t in self.committed
            ],
            "masked": [list(run) for run in self.masked],
            "num_masked": self.num_masked,
            "action": self.action,
        }


@dataclass(slots=True)
class _Pending:
    before: torch.Tensor
    """The generation part of the canvas before the commit."""
    logits: torch.Tensor
    """[K, vocab] raw (guided) logits of the rows the forward decided, before the logits processors."""
    block_index: int


class CanvasTracer:
    def __init__(
        self, mask_token_id: int, eos_token_ids: Seq[int], decode: Callable[[list[int], bool], str]
    ) -> None:
        self.mask_token_id = mask_token_id
        self.eos_token_ids = frozenset(eos_token_ids)
        self.decode = decode

    def before_commit(self, seqs: Seq[Any], results: Seq[Any]) -> dict[int, _Pending]:
        """Snapshot the traced sequences of a step (index -> state); {} when none is traced."""
        return {
            index: _Pending(
                seq.canvas[seq.prompt_len :].clone(),
                _raw(result.logits, seq),
                seq.block_index,
            )
            for index, (seq, result) in enumerate(zip(seqs, results, strict=True))
            if seq.params.record_canvas
        }

    def after_commit(self, pending: dict[int, _Pending], seqs: Seq[Any], requests: Seq[Any]) -> None:
        for index, snapshot in pending.items():
            seq = seqs[index]
            if not seq.is_finished:  # a sequence failed in this step has no frame
                seq.canvas_frames.append(self._frame(seq, snapshot, requests[index].decided))

    def _frame(self, seq: Any, snapshot: _Pending, decided: torch.Tensor | None) -> CanvasFrame:
        mask = self.mask_token_id
        gen = seq.canvas[seq.prompt_len :]
        is_masked = gen == mask
        positions = ((snapshot.before == mask) & ~is_masked).nonzero().flatten()
        token_ids = gen[positions].tolist()
        confidence = self._confidence(seq, snapshot, decided, positions, gen[positions])
        committed = tuple(
            CommittedToken(position, token, self.decode([token], False)[:MAX_TOKEN_TEXT], prob)
            for position, token, prob in zip(positions.tolist(), token_ids, confidence, strict=True)
        )
        blocks = tuple((block.start, block.end) for block in seq.blocks)
        block = snapshot.block_index
        if committed:
            first = committed[0].position
            block = next(i for i, (start, end) in enumerate(blocks) if start <= first < end)
        answer_end = self._answer_end(seq, gen, is_masked)
        runs = _runs(is_masked)
        return CanvasFrame(
            step=seq.stats.num_denoising_steps,
            policy=seq.policy_name,
            canvas_length=gen.shape[0],
            answer_end=answer_end,
            block=min(block, len(blocks) - 1),
            blocks=blocks,
            committed=committed,
            masked=runs,
            num_masked=int(is_masked[:answer_end].sum()),
            action=_action(seq, decided, committed),
        )

    def _confidence(
        self,
        seq: Any,
        snapshot: _Pending,
        decided: torch.Tensor | None,
        positions: torch.Tensor,
        tokens: torch.Tensor,
    ) -> list[float | None]:
        if decided is None or not positions.numel():
            return [None] * positions.numel()
        row_of = {int(canvas_index): row for row, canvas_index in enumerate(decided.tolist())}
        rows = [row_of.get(int(p) + seq.prompt_len) for p in positions]
        known = [i for i, row in enumerate(rows) if row is not None]
        values: list[float | None] = [None] * len(rows)
        if known:
            logits = snapshot.logits[torch.tensor([rows[i] for i in known], device=snapshot.logits.device)]
            picked = tokens[known].to(logits.device)
            probs = logits.float().softmax(dim=-1).gather(-1, picked[:, None]).squeeze(-1).tolist()
            for i, prob in zip(known, probs, strict=True):
                values[i] = round(prob, 4)
        return values

    def _answer_end(self, seq: Any, gen: torch.Tensor, is_masked: torch.Tensor) -> int:
        """max_tokens, or the first committed end token when only committed tokens lie left of it (the
        answer ends there whatever the later positions become)."""
        params = seq.params
        end_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_token_ids)
        limit = min(params.max_tokens, gen.shape[0])
        if not end_ids:
            return limit
        ends = torch.isin(gen[:limit], torch.tensor(sorted(end_ids), dtype=gen.dtype)).nonzero().flatten()
        return int(ends[0]) if ends.numel() else limit


def _raw(logits: torch.Tensor, seq: Any) -> torch.Tensor:
    """A reference to the logits before the processors replace them; a copy when the grammar's frontier
    mask will write into them."""
    guided = guided_logits(logits, seq.params.cfg_scale)
    return guided.clone() if getattr(seq, "grammar", None) is not None else guided


def _runs(is_masked: torch.Tensor) -> tuple[tuple[int, int], ...]:
    flags = torch.nn.functional.pad(is_masked.to(torch.int8), (1, 1))
    change = flags[1:] - flags[:-1]
    starts = (change == 1).nonzero().flatten().tolist()
    ends = (change == -1).nonzero().flatten().tolist()
    return tuple(zip(starts, ends, strict=True))


def _action(seq: Any, decided: torch.Tensor | None, committed: tuple[CommittedToken, ...]) -> dict[str, Any]:
    num_decided = 0 if decided is None else int(decided.numel())
    params = seq.params
    if seq.policy_name == "apd":
        return {"drafted": num_decided, "accepted": len(committed)}
    if seq.policy_name == "threshold":
        above = None  # the factor rule has no τ to clear
        if not params.factor:
            above = sum(1 for t in committed if t.confidence is not None and t.confidence >= params.threshold)
        return {
            "threshold": params.threshold,
            "factor": params.factor,
            "candidates": num_decided,
            "committed": len(committed),
            "above_threshold": above,
        }
    return {"candidates": num_decided, "committed": len(committed)}


def take_frames(seq: Any) -> list[CanvasFrame] | None:
    """The frames recorded since the last output (None for an untraced sequence)."""
    frames = seq.canvas_frames
    if frames is None:
        return None
    seq.canvas_frames = []
    return frames
