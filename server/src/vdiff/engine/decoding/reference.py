"""The published decoders, step for step: LLaDA's `generate` and Dream's `diffusion_generate`.

Both re-run the whole canvas (prompt + every generation position) each step and commit a scheduled
number of tokens inside the current block:
- LLaDA rule (`remasking` low_confidence | random): the block's masks are split evenly over its steps
  (remainder first); tokens are Gumbel-argmax samples in float64; the top-k by confidence commit;
  cfg_scale > 0 adds an unconditional row (prompt masked) and mixes u + (cfg + 1)(c - u).
- Dream rule (`alg` origin | maskgit_plus | topk_margin | entropy): time grid linspace(1, eps, steps + 1),
  floor(#mask · (1 - s/t)) reveals per step (origin: each mask independently with that probability),
  top_p / top_k filtering, alg_temp sampling of positions.
Steps that would commit nothing are skipped without a forward (exact at temperature 0).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from vdiff.engine.decoding.base import DecodingPolicy, ForwardRequest, ForwardResult, register_policy
from vdiff.engine.decoding.constrained import frontier_run, is_constrained
from vdiff.engine.decoding.sampling import (
    avoid_mask_token,
    dream_num_transfer,
    dream_reveal_fractions,
    dream_sample_tokens,
    dream_timesteps,
    filter_logits,
    guidance_rows,
    guided_logits,
    gumbel_argmax,
    llada_transfer_schedule,
    positions,
)
from vdiff.engine.sequence import Block, Sequence

DREAM_CONFIDENCE = {"maskgit_plus": "prob", "topk_margin": "margin", "entropy": "neg_entropy"}


@dataclass(slots=True)
class BlockProgress:
    """Where a sequence is inside its current block."""

    block_index: int = -1
    llada_schedule: list[int] = field(default_factory=list)
    dream_timesteps: torch.Tensor | None = None
    dream_reveal_fractions: list[float] = field(default_factory=list)
    masked: torch.Tensor | None = None
    """Canvas indices queried by the pending forward."""
    num_to_commit: int = 0


def uses_dream_rule(seq: Sequence) -> bool:
    return seq.params.alg is not None


def filters_logits(params) -> bool:
    return params.top_p < 1 or params.top_k > 0


@register_policy
class ReferencePolicy(DecodingPolicy):
    name = "reference"

    def init_sequence(self, seq: Sequence) -> None:
        seq.decoding_state = BlockProgress()

    def prepare(self, seq: Sequence) -> ForwardRequest | None:
        progress: BlockProgress = seq.decoding_state
        if not self._find_next_step(seq, progress):
            return None
        canvas = seq.canvas
        logit_indices = progress.masked - 1 if self.context.logit_shift else progress.masked
        return ForwardRequest(
            input_ids=guidance_rows(canvas, seq.prompt_len, self.context.mask_token_id, seq.params.cfg_scale),
            position_ids=positions(0, canvas.shape[0]),
            logit_indices=logit_indices,
            decided=progress.masked,
        )

    def commit(self, seqs: list[Sequence], results: list[ForwardResult]) -> None:
        """Commit for every sequence at once: the per-position math (softmax, argmax, confidences) runs
        over all sequences' logits together; only generator draws and position picks stay per sequence."""
        batched = [
            index for index, seq in enumerate(seqs) if seq.params.alg != "origin" and not is_constrained(seq)
        ]
        if len(batched) == 1:
            batched = []  # one sequence: the per-sequence path is the same math with fewer ops
        if len(batched) < len(seqs):
            batched_set = set(batched)
            for index, (seq, result) in enumerate(zip(seqs, results, strict=True)):
                if index not in batched_set:
                    self.commit_one(seq, result)
        if batched:
            self._commit_batched([seqs[i] for i in batched], [results[i] for i in batched])

    def commit_one(self, seq: Sequence, result: ForwardResult) -> None:
        progress: BlockProgress = seq.decoding_state
        logits = guided_logits(result.logits, seq.params.cfg_scale)
        if is_constrained(seq):
            seq.commit(*self._constrained_choose(seq, progress, logits))
            seq.step_in_block += 1
            return
        if uses_dream_rule(seq):
            chosen, tokens = self._dream_choose(seq, progress, logits)
        else:
            chosen, tokens = self._llada_choose(seq, progress, logits)
        seq.commit(progress.masked[chosen], tokens)
        seq.step_in_block += 1

    def _commit_batched(self, seqs: list[Sequence], results: list[ForwardResult]) -> None:
        mask_token_id = self.context.mask_token_id
        seq_logits = [
            guided_logits(result.logits, seq.params.cfg_scale)
            for seq, result in zip(seqs, results, strict=True)
        ]
        counts = [logits.shape[0] for logits in seq_logits]
        bounds = list(itertools.accumulate(counts, initial=0))
        logits = torch.cat(seq_logits) if len(seq_logits) > 1 else seq_logits[0]
        dream_rows = [uses_dream_rule(seq) for seq in seqs]

        # Dream's sampler works on (temperature-scaled, filtered) probabilities, LLaDA's on raw logits.
        dream_probs = None
        if any(dream_rows):
            scaled = [
                filter_logits(
                    seq_logits[i] / seq.params.temperature if seq.params.temperature > 0 else seq_logits[i],
                    seq.params.top_p,
                    seq.params.top_k,
                )
                if dream_rows[i] and (seq.params.temperature > 0 or filters_logits(seq.params))
                else seq_logits[i]
                for i, seq in enumerate(seqs)
            ]
            dream_probs = torch.softmax(torch.cat(scaled) if len(scaled) > 1 else scaled[0], dim=-1)
        llada_probs = torch.softmax(logits, dim=-1) if not all(dream_rows) else None

        # temperature 0: LLaDA takes argmax(logits), Dream max(probs); sampled rows are overwritten below
        dream_tokens = dream_probs.max(dim=-1).indices if dream_probs is not None else None
        tokens = logits.argmax(dim=-1) if llada_probs is not None else dream_tokens
        assert tokens is not None
        drawn_confidence: dict[int, torch.Tensor] = {}
        for i, seq in enumerate(seqs):
            params, rows = seq.params, slice(bounds[i], bounds[i + 1])
            if dream_rows[i]:
                assert dream_probs is not None and dream_tokens is not None
                if params.temperature > 0 and counts[i] > 0:
                    tokens[rows] = torch.multinomial(dream_probs[rows], 1, generator=seq.generator).squeeze(
                        -1
                    )
                elif dream_tokens is not tokens:
                    tokens[rows] = dream_tokens[rows]
                continue
            if params.temperature > 0:
                tokens[rows] = gumbel_argmax(
                    filter_logits(seq_logits[i], params.top_p, params.top_k),
                    params.temperature,
                    seq.generator,
                )
            if params.remasking == "random":
                drawn_confidence[i] = torch.rand(counts[i], device=logits.device, generator=seq.generator)
        sampled_tokens = tokens  # Dream's confidence is taken before the mask-token fallback
        tokens = avoid_mask_token(tokens, logits, mask_token_id)

        confidence = self._confidence(
            seqs, bounds, dream_rows, sampled_tokens, tokens, llada_probs, dream_probs
        )
        for i, drawn in drawn_confidence.items():
            confidence[bounds[i] : bounds[i + 1]] = drawn
        self._commit_top_positions(seqs, bounds, confidence, tokens)

    @staticmethod
    def _confidence(
        seqs: list[Sequence],
        bounds: list[int],
        dream_rows: list[bool],
        sampled_tokens: torch.Tensor,
        tokens: torch.Tensor,
        llada_probs: torch.Tensor | None,
        dream_probs: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per position: LLaDA p(token); Dream p(token), p1 - p2 or Σ p log p (each sequence's rule)."""
        kinds = [
            DREAM_CONFIDENCE[seq.params.alg] if dream else "llada"
            for seq, dream in zip(seqs, dream_rows, strict=True)
        ]
        by_kind: dict[str, torch.Tensor] = {}
        for kind in dict.fromkeys(kinds):
            if kind == "llada":
                assert llada_probs is not None
                by_kind[kind] = llada_probs.gather(-1, tokens[:, None]).squeeze(-1)
                continue
            assert dream_probs is not None
            if kind == "prob":
                by_kind[kind] = dream_probs.gather(-1, sampled_tokens[:, None]).squeeze(-1)
            elif kind == "margin":
                top2 = torch.topk(dream_probs, 2, dim=-1).values
                by_kind[kind] = top2[:, 0] - top2[:, 1]
            else:
                by_kind[kind] = torch.sum(dream_probs * torch.log(dream_probs + 1e-10), dim=-1)
        if len(by_kind) == 1:
            return next(iter(by_kind.values()))  # a fresh tensor: callers may write into it
        confidence = torch.empty_like(next(iter(by_kind.values())))
        for i, kind in enumerate(kinds):
            confidence[bounds[i] : bounds[i + 1]] = by_kind[kind][bounds[i] : bounds[i + 1]]
        return confidence

    @staticmethod
    def _commit_top_positions(
        seqs: list[Sequence], bounds: list[int], confidence: torch.Tensor, tokens: torch.Tensor
    ) -> None:
        """Pick positions over canvas-long score vectors (-inf where not a candidate), as the reference
        does, so ties break exactly the same way. Sequences with the same canvas length and commit
        count share one topk call (row-wise identical to calling it per sequence)."""
        device = confidence.device
        canvas_lens = [seq.canvas.shape[0] for seq in seqs]
        width = max(canvas_lens)
        row_index = torch.repeat_interleave(
            torch.arange(len(seqs), device=device),
            torch.tensor([bounds[i + 1] - bounds[i] for i in range(len(seqs))], device=device),
        )
        masked = torch.cat([seq.decoding_state.masked for seq in seqs]).to(device)
        scores = torch.full((len(seqs), width), float("-inf"), device=device, dtype=confidence.dtype)
        scores[row_index, masked] = confidence
        canvas_tokens = torch.zeros((len(seqs), width), device=device, dtype=tokens.dtype)
        canvas_tokens[row_index, masked] = tokens

        groups: dict[tuple[int, int], list[int]] = {}
        for i, seq in enumerate(seqs):
            alg_temp = seq.params.alg_temp if uses_dream_rule(seq) else None
            if alg_temp:
                weights = torch.softmax(scores[i, : canvas_lens[i]] / alg_temp, dim=-1)
                num = seq.decoding_state.num_to_commit
                positions = torch.multinomial(weights, num, generator=seq.generator)
                seq.commit(positions, canvas_tokens[i, positions])
                seq.step_in_block += 1
                continue
            groups.setdefault((canvas_lens[i], seq.decoding_state.num_to_commit), []).append(i)
        for (canvas_len, num), members in groups.items():
            positions = torch.topk(scores[members, :canvas_len], num).indices
            group_tokens = canvas_tokens[members].gather(1, positions).cpu()  # one copy per group
            positions = positions.cpu()
            for slot, i in enumerate(members):
                seqs[i].commit(positions[slot], group_tokens[slot])
                seqs[i].step_in_block += 1

    def _find_next_step(self, seq: Sequence, progress: BlockProgress) -> bool:
        """Move the block/step cursor to the next step that commits something; False when done."""
        while True:
            block = seq.current_block
            if block is None:
                return False
            if progress.block_index != seq.block_index:
                self._start_block(seq, progress, block)
            extends = is_constrained(seq) and seq.masked_positions(block.start, block.end).numel() > 0
            if seq.step_in_block >= block.num_steps and not extends:
                seq.block_index += 1
                seq.step_in_block = 0
                continue
            progress.masked = seq.masked_positions(block.start, block.end)
            num_masked = progress.masked.shape[0]
            if num_masked == 0:
                seq.step_in_block = block.num_steps
                continue
            if seq.step_in_block >= block.num_steps:  # a constrained run fell short: finish the block
                progress.num_to_commit = num_masked
                return True
            if uses_dream_rule(seq):
                if seq.params.alg == "origin":
                    return True
                progress.num_to_commit = dream_num_transfer(
                    num_masked, seq.step_in_block, progress.dream_reveal_fractions
                )
            else:
                progress.num_to_commit = progress.llada_schedule[seq.step_in_block]
            if progress.num_to_commit > 0:
                return True
            seq.step_in_block += 1

    def _start_block(self, seq: Sequence, progress: BlockProgress, block: Block) -> None:
        progress.block_index = seq.block_index
        if uses_dream_rule(seq):
            progress.dream_timesteps = dream_timesteps(block.num_steps, seq.params.eps)
            progress.dream_reveal_fractions = dream_reveal_fractions(progress.dream_timesteps)
        else:
            num_masked = seq.masked_positions(block.start, block.end).shape[0]
            progress.llada_schedule = llada_transfer_schedule(num_masked, block.num_steps)

    def _constrained_choose(
        self, seq: Sequence, progress: BlockProgress, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's own tokens for every queried position (its sampler, the frontier row already
        masked), committed from the frontier up to this step's transfer count (constrained.py)."""
        params = seq.params
        count = progress.num_to_commit
        if uses_dream_rule(seq):
            if params.alg == "origin":
                block = seq.current_block
                assert block is not None
                step, timesteps = seq.step_in_block, progress.dream_timesteps
                last = step >= block.num_steps - 1
                p_transfer = 1.0 if last else float(1 - timesteps[step + 1] / timesteps[step])
                draws = torch.rand(logits.shape[0], device=logits.device, generator=seq.generator)
                count = int((draws < p_transfer).sum())
            _, tokens = dream_sample_tokens(
                logits, params.temperature, params.top_p, params.top_k, "prob", seq.generator
            )
        else:
            sample_from = (
                filter_logits(logits, params.top_p, params.top_k) if params.temperature > 0 else logits
            )
            tokens = gumbel_argmax(sample_from, params.temperature, seq.generator)
        tokens = avoid_mask_token(tokens, logits, self.context.mask_token_id)
        return frontier_run(seq, progress.masked, tokens.cpu(), max_count=count)

    def _llada_choose(
        self, seq: Sequence, progress: BlockProgress, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        params = seq.params
        sample_from = filter_logits(logits, params.top_p, params.top_k) if params.temperature > 0 else logits
        tokens = gumbel_argmax(sample_from, params.temperature, seq.generator)
        tokens = avoid_mask_token(tokens, logits, self.context.mask_token_id)
        if params.remasking == "random":
            confidence = torch.rand(tokens.shape, device=logits.device, generator=seq.generator)
        else:
            confidence = torch.softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
        return self._top_positions(seq, progress, confidence, tokens, progress.num_to_commit)

    def _dream_choose(
        self, seq: Sequence, progress: BlockProgress, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        params = seq.params
        block = seq.current_block
        assert block is not None
        if params.alg == "origin":
            step, timesteps = seq.step_in_block, progress.dream_timesteps
            last = step >= block.num_steps - 1
            p_transfer = 1.0 if last else float(1 - timesteps[step + 1] / timesteps[step])
            draws = torch.rand(logits.shape[0], device=logits.device, generator=seq.generator)
            chosen = (draws < p_transfer).nonzero().flatten()
            _, tokens = dream_sample_tokens(
                logits[chosen], params.temperature, params.top_p, params.top_k, "prob", seq.generator
            )
            tokens = avoid_mask_token(tokens, logits[chosen], self.context.mask_token_id)
            return chosen.cpu(), tokens
        confidence, tokens = dream_sample_tokens(
            logits,
            params.temperature,
            params.top_p,
            params.top_k,
            DREAM_CONFIDENCE[params.alg],
            seq.generator,
        )
        tokens = avoid_mask_token(tokens, logits, self.context.mask_token_id)
        return self._top_positions(seq, progress, confidence, tokens, progress.num_to_commit, params.alg_temp)

    @staticmethod
    def _top_positions(
        seq: Sequence,
        progress: BlockProgress,
        confidence: torch.Tensor,
        tokens: torch.Tensor,
        num_to_commit: int,
        alg_temp: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick positions over a canvas-long score vector (-inf where not a candidate), as the reference
        does, so ties between equal confidences break exactly the same way."""
        canvas_len = seq.canvas.shape[0]
        masked = progress.masked.to(confidence.device)
        scores = torch.full((canvas_len,), float("-inf"), device=confidence.device, dtype=confidence.dtype)
        scores[masked] = confidence
        if not alg_temp:
            positions = torch.topk(scores, num_to_commit).indices
        else:
            weights = torch.softmax(scores / alg_temp, dim=-1)
            positions = torch.multinomial(weights, num_to_commit, generator=seq.generator)
        row_of_position = torch.full((canvas_len,), -1, dtype=torch.int64, device=confidence.device)
        row_of_position[masked] = torch.arange(masked.shape[0], device=confidence.device)
        return row_of_position[positions].cpu(), tokens[row_of_position[positions]]
