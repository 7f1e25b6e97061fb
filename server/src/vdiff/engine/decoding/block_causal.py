"""Block diffusion decoding with an exact KV cache (SDAR's `block_diffusion_generate`).

The canvas is cut into blocks of the model's attention block B at absolute positions (0, B, 2B, ...), so
the prompt's last partial block is decoded together with the first generated tokens. Attention is
block-causal, so the keys of finished blocks never change: they are cached once, exactly, and every
step forwards only the current block with that cache as past.

Each forward's queries are [cached, block_end): the finished blocks whose keys are not cached yet (the
prompt's full blocks at the first step, the block finished by the previous step afterwards), then the
current block. Block-causal attention makes this one forward equal to SDAR's two (the `store_kv` forward
over the finished block, then the denoising forward over the next one), so a block costs its denoising
steps only. The commit rule is SDAR's `low_confidence_dynamic`: n_step = B / steps per step (remainder
first); if at least n_step masks have p > threshold all of those are committed, else the n_step most
confident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vdiff.engine.decoding.base import DecodingPolicy, ForwardRequest, ForwardResult, register_policy
from vdiff.engine.decoding.constrained import frontier_run, is_constrained
from vdiff.engine.decoding.sampling import avoid_mask_token, positions, top_k_logits, top_p_logits
from vdiff.engine.kv_cache import SequenceKV
from vdiff.engine.sequence import Sequence
from vdiff.errors import VdiffValidationError


def transfer_schedule(block_size: int, num_steps: int) -> list[int]:
    """SDAR's get_num_transfer_tokens: B / steps tokens per step, the remainder to the earliest steps."""
    base, remainder = divmod(block_size, num_steps)
    return [base + (1 if step < remainder else 0) for step in range(num_steps)]


def select_dynamic(
    confidence: torch.Tensor, candidates: torch.Tensor, num_transfer: torch.Tensor, threshold: torch.Tensor
) -> torch.Tensor:
    """low_confidence_dynamic for every row at once: confidence [S, W], candidates [S, W] bool (the
    current block's masks), num_transfer [S] (clamped to the row's masks), threshold [S]. Returns the
    positions to commit [S, W] bool: every candidate with p > threshold when there are at least
    num_transfer of them, else the num_transfer most confident candidates."""
    scores = confidence.float().masked_fill(~candidates, float("-inf"))
    above = candidates & (scores > threshold.to(scores).view(-1, 1))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order)
    )
    top = candidates & (ranks < num_transfer.view(-1, 1))
    return torch.where((above.sum(dim=-1) >= num_transfer).view(-1, 1), above, top)


@dataclass(slots=True)
class BlockState:
    """Per sequence: the exact keys/values of canvas positions [0, num_cached) and the current block."""

    buffer: SequenceKV | None = None
    """Keys/values per layer [num_kv_heads, capacity, head_dim]; the first num_cached are real."""
    num_cached: int = 0
    block_start: int = -1
    """Canvas index where the current block starts (a multiple of B)."""
    step: int = 0
    """Denoising steps already taken in the current block."""
    query_start: int = 0
    store_end: int = 0
    """The pending forward's queries [query_start, store_end) are final: their keys join the cache."""
    masked: torch.Tensor | None = None
    """Canvas indices of the current block's masks, decided by the pending forward."""
    is_prefill_only: bool = False
    """The pending forward only writes prompt blocks to the cache (chunked prefill: no logits)."""
    is_first_token: bool = False
    """The pending forward decides only a generated block's first token from the finished block's last
    logit (a shifted model, Fast-dLLM v2: argmax, not a denoising step)."""

    @property
    def past(self) -> SequenceKV | None:
        return None if self.buffer is None or not self.num_cached else self.buffer.crop(self.num_cached)

    def append(self, finished: SequenceKV) -> None:
        """Cache the keys/values of the next finished positions (the buffer doubles when full, so a
        sequence copies its cache O(1) times per token, not once per block)."""
        needed = self.num_cached + finished.length
        if self.buffer is None or self.buffer.length < needed:
            capacity = max(needed, 2 * (0 if self.buffer is None else self.buffer.length))
            grown = SequenceKV(
                [k.new_empty(k.shape[0], capacity, k.shape[-1]) for k in finished.keys],
                [v.new_empty(v.shape[0], capacity, v.shape[-1]) for v in finished.values],
            )
            if self.buffer is not None:
                for new, old in zip(
                    grown.keys + grown.values, self.buffer.keys + self.buffer.values, strict=True
                ):
                    new[:, : self.num_cached] = old[:, : self.num_cached]
            self.buffer = grown
        for new, part in zip(
            self.buffer.keys + self.buffer.values, finished.keys + finished.values, strict=True
        ):
            new[:, self.num_cached : needed] = part
        self.num_cached = needed


@register_policy
class BlockCausalPolicy(DecodingPolicy):
    """SDAR block diffusion: absolute blocks of the model's B, exact prefix cache, dynamic threshold."""

    name = "block"

    @property
    def block_size(self) -> int:
        return int(self.context.runner.model.block_size)

    @property
    def prefill_chunk(self) -> int:
        """Prompt positions one prefill step may cache: whole blocks within --max-num-batched-tokens, with
        room for the denoising block of the same forward."""
        config = self.context.config
        budget = getattr(config, "max_num_batched_tokens", None) or 1 << 62
        return max(self.block_size, (budget - self.block_size) // self.block_size * self.block_size)

    def validate(self, params: Any, model_family: str) -> None:
        if not getattr(self.context.runner.model, "is_block_causal", False):
            raise VdiffValidationError(
                "decoding 'block' needs a block-diffusion model (block-causal attention, e.g. SDAR)",
                "decoding",
            )
        if params.cfg_scale > 0:
            raise VdiffValidationError("decoding 'block' does not support cfg_scale", "cfg_scale")
        if params.kv_cache != "none":
            raise VdiffValidationError(
                "decoding 'block' always keeps an exact cache of finished blocks; use kv_cache 'none'",
                "kv_cache",
            )

    def init_sequence(self, seq: Sequence) -> None:
        seq.decoding_state = BlockState()

    def prepare(self, seq: Sequence) -> ForwardRequest | None:
        state: BlockState = seq.decoding_state
        block_size, canvas = self.block_size, seq.canvas
        search_from = max(seq.prompt_len, state.block_start)
        masked = (canvas[search_from:] == self.context.mask_token_id).nonzero().flatten()
        if not masked.numel():
            return None
        block_start = (search_from + int(masked[0])) // block_size * block_size
        block_end = min(block_start + block_size, canvas.shape[0])
        if block_start != state.block_start:
            state.block_start, state.step = block_start, 0
        state.masked = masked[masked + search_from < block_end] + search_from
        cached, past = state.num_cached, state.past
        chunk = self.prefill_chunk
        if block_start - cached > chunk:  # a long prompt: its blocks go into the cache a chunk per step
            state.is_prefill_only, state.query_start, state.store_end = True, cached, cached + chunk
            return ForwardRequest(
                input_ids=canvas[cached : cached + chunk].unsqueeze(0),
                position_ids=positions(cached, cached + chunk),
                logit_indices=torch.zeros(0, dtype=torch.int64),
                past=None if past is None else [past],
                use_cache=True,
                decided=torch.zeros(0, dtype=torch.int64),
            )
        state.is_prefill_only = False
        state.query_start, state.store_end = cached, block_start
        shift = 1 if self.context.logit_shift else 0
        state.is_first_token = bool(shift) and int(state.masked[0]) == block_start
        if state.is_first_token:  # Fast-dLLM v2: the finished blocks' forward alone gives this token
            state.masked, block_end = state.masked[:1], block_start
        elif sub_block := getattr(self.context.runner.model, "sub_block_size", None):
            state.masked = state.masked[state.masked // sub_block == int(state.masked[0]) // sub_block]
        return ForwardRequest(
            input_ids=canvas[cached:block_end].unsqueeze(0),
            position_ids=positions(cached, block_end),
            logit_indices=state.masked - cached - shift,
            past=None if past is None else [past],
            use_cache=block_start > cached,
            decided=state.masked,
        )

    def commit(self, seqs: list[Sequence], results: list[ForwardResult]) -> None:
        if not seqs:
            return
        for seq, result in zip(seqs, results, strict=True):
            state: BlockState = seq.decoding_state
            if state.store_end > state.query_start and state.num_cached == state.query_start:
                # (checked: a commit retried by the step guard must not append the same keys twice)
                assert result.past_key_values is not None
                num_finished = state.store_end - state.query_start
                state.append(SequenceKV.from_batch(result.past_key_values, 0, 0, num_finished))
        denoising = [row for row, seq in enumerate(seqs) if not seq.decoding_state.is_prefill_only]
        if not denoising:
            return
        seqs, results = [seqs[row] for row in denoising], [results[row] for row in denoising]
        tokens, confidence, candidates = self._sample(seqs, results)
        device = confidence.device
        num_masks = candidates.sum(dim=-1)
        num_transfer = torch.tensor([self._num_transfer(seq) for seq in seqs], device=device)
        num_transfer = torch.minimum(num_transfer, num_masks)
        threshold = torch.tensor([seq.params.threshold for seq in seqs], device=device)
        chosen = select_dynamic(confidence, candidates, num_transfer, threshold)
        for row, seq in enumerate(seqs):
            state = seq.decoding_state
            picked = chosen[row, : state.masked.shape[0]].cpu()
            if is_constrained(seq):  # from the frontier, while the grammar and the dynamic rule accept
                seq.commit(
                    *frontier_run(seq, state.masked, tokens[row, : state.masked.shape[0]].cpu(), picked)
                )
            else:
                seq.commit(state.masked[picked], tokens[row, : state.masked.shape[0]][picked.to(device)])
            state.step += 0 if state.is_first_token else 1

    def release(self, seq: Sequence) -> None:
        seq.decoding_state = None

    def _num_transfer(self, seq: Sequence) -> int:
        """This step's n_step from the block's schedule (`steps` is per request: spread over its blocks;
        the default is B steps per block, SDAR's published setting)."""
        block_size, state = self.block_size, seq.decoding_state
        steps = seq.params.steps
        if steps is None:
            steps_per_block = block_size
        else:
            first_block = seq.prompt_len // block_size
            num_blocks = -(-seq.canvas.shape[0] // block_size) - first_block
            steps_per_block = max(1, min(block_size, steps // max(1, num_blocks)))
        schedule = transfer_schedule(block_size, steps_per_block)
        return schedule[state.step] if state.step < len(schedule) else block_size

    def _sample(
        self, seqs: list[Sequence], results: list[ForwardResult]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens and their probabilities per sequence, padded to [num_seqs, max masks] (candidates marks
        the real entries). Temperature 0: argmax and its softmax probability. Otherwise SDAR's sampler:
        logits / T, top-k, top-p, one multinomial draw from the sequence's generator, and the drawn
        token's probability under that distribution."""
        width = max(seq.decoding_state.masked.shape[0] for seq in seqs)
        device = results[0].logits.device
        tokens = torch.zeros(len(seqs), width, dtype=torch.int64, device=device)
        confidence = torch.zeros(len(seqs), width, dtype=torch.float32, device=device)
        candidates = torch.zeros(len(seqs), width, dtype=torch.bool, device=device)
        for row, (seq, result) in enumerate(zip(seqs, results, strict=True)):
            logits, params = result.logits[0], seq.params
            count = logits.shape[0]
            if params.temperature > 0 and not seq.decoding_state.is_first_token:
                scaled = logits / params.temperature
                if params.top_k > 0:
                    scaled = top_k_logits(scaled, params.top_k)
                if params.top_p < 1:
                    scaled = top_p_logits(scaled, params.top_p)
                probs = torch.softmax(scaled, dim=-1)
                drawn = torch.multinomial(probs, 1, generator=seq.generator).squeeze(-1)
            else:
                probs = torch.softmax(logits, dim=-1)
                drawn = logits.argmax(dim=-1)
            drawn = avoid_mask_token(drawn, logits, self.context.mask_token_id)
            tokens[row, :count] = drawn
            confidence[row, :count] = probs.gather(-1, drawn[:, None]).squeeze(-1)
            candidates[row, :count] = True
        return tokens, confidence, candidates
