"""APD: adaptive parallel decoding with a small autoregressive verifier (Israel et al. 2025).

The dLLM drafts positions t..t+M-1 left to right from its marginals; the AR model scores the draft;
the target is the multiplicative mixture p_T ∝ p_D^R · p_AR^(1-R). Draft and target are sampled with
the same Gumbel noise (universal coupling), and the longest prefix on which they agree is accepted.
The first drafted token is always accepted: every token left of it is committed, so it is a sample of
the dLLM's exact conditional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vdiff.engine.decoding.base import DecodingPolicy, ForwardRequest, ForwardResult, register_policy
from vdiff.engine.decoding.constrained import frontier_run, is_constrained
from vdiff.engine.draft_model import DraftModel, load_draft_model
from vdiff.engine.kv_cache import SequenceKV
from vdiff.engine.sequence import Sequence
from vdiff.errors import VdiffValidationError


def gumbel_noise(
    num_positions: int, vocab_size: int, generator: torch.Generator | None, device
) -> torch.Tensor:
    """Standard Gumbel noise [num_positions, vocab] drawn from one sequence's own generator."""
    exponential = torch.empty(num_positions, vocab_size, device=device, dtype=torch.float32)
    exponential.exponential_(generator=generator)
    return -exponential.clamp_min(1e-30).log()


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-k / top-p filtering per row; logits [B, M, V], top_k [B] (<=0: off), top_p [B] (1: off)."""
    vocab_size = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab_size, device=logits.device).view(1, 1, vocab_size)
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab_size)).view(-1, 1, 1)
    drop = (rank >= k).expand_as(logits).clone()
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    top_p = top_p.to(probs).view(-1, 1, 1)
    drop |= (mass_before >= top_p) & (top_p < 1)  # top_p = 1 is off, even where the cumsum rounds to 1
    drop[..., 0] = False
    removed = torch.zeros_like(drop).scatter(-1, order, drop)
    return logits.masked_fill(removed, float("-inf"))


def coupled_sample(
    log_probs: torch.Tensor,
    temperature: torch.Tensor,
    gumbel: torch.Tensor | None,
    top_k: torch.Tensor | None = None,
    top_p: torch.Tensor | None = None,
) -> torch.Tensor:
    """argmax(filter(log_probs / T) + g) per position; greedy for rows with T = 0.

    log_probs [B, M, V], temperature [B], gumbel [B, M, V] (shared by draft and target).
    """
    temperature = temperature.to(log_probs).view(-1, 1, 1)
    is_sampled = temperature > 0
    scaled = log_probs / torch.where(is_sampled, temperature, torch.ones_like(temperature))
    if top_k is not None and top_p is not None:
        scaled = filter_logits(scaled, top_k, top_p)
    if gumbel is not None:
        scaled = torch.where(is_sampled, scaled + gumbel, scaled)
    return scaled.argmax(dim=-1)


def mixture_log_probs(
    dllm_log_probs: torch.Tensor, ar_log_probs: torch.Tensor, mixture_weight: torch.Tensor
) -> torch.Tensor:
    """R · log p_D + (1 - R) · log p_AR (unnormalized log of the geometric mixture), R [B]."""
    weight = mixture_weight.to(dllm_log_probs).view(-1, 1, 1)
    return weight * dllm_log_probs + (1 - weight) * ar_log_probs


def num_accepted(draft: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Length of the longest prefix where draft == target, the first token always accepted.

    draft, target [B, M] token ids; lengths [B] drafted positions per row (>= 1; ragged rows).
    """
    positions = torch.arange(draft.shape[1], device=draft.device).view(1, -1)
    agrees = (draft == target) | (positions == 0)
    agrees &= positions < lengths.view(-1, 1)
    return agrees.to(torch.int64).cumprod(dim=-1).sum(dim=-1)


@dataclass(slots=True)
class APDState:
    """Per-sequence APD state. Canvas indices throughout; `t` is the first masked position."""

    dllm_kv: SequenceKV | None = None
    """dLLM keys/values of canvas positions [0, dllm_kv.length) (the KV window W reuses them)."""
    previous_frontier: int | None = None
    ar_kv: SequenceKV | None = None
    """Verifier keys/values of committed positions [0, ar_kv.length): always exact (causal model)."""
    ar_next_logits: torch.Tensor | None = None
    """Verifier logits predicting position `t` (from the step that committed t - 1)."""
    frontier: int = 0
    right: int = 0
    left: int = 0
    is_windowed: bool = False
    num_steps: int = 0
    num_accepted: int = 0


@dataclass(slots=True)
class _Step:
    """One sequence's part of a commit: its drafted span and the verifier rows it needs."""

    seq: Sequence
    state: APDState
    dllm_log_probs: torch.Tensor
    ar_start: int = 0
    """Canvas position of the verifier logit row ar_logits[0] (its prediction is for ar_start + 1)."""
    ar_logits: torch.Tensor | None = None
    ar_kv: Any = None


@register_policy
class APDPolicy(DecodingPolicy):
    """Left-to-right drafting by the dLLM, verified by a small AR model under a shared-noise coupling."""

    name = "apd"

    def __init__(self, context) -> None:
        super().__init__(context)
        self.verifier: DraftModel | None = None
        config, tokenizer_info = getattr(context, "config", None), getattr(context, "tokenizer_info", None)
        if config is not None and config.draft_model and tokenizer_info is not None:
            self.verifier = load_draft_model(config, tokenizer_info)

    def validate(self, params: Any, model_family: str) -> None:
        if self.verifier is None:
            raise VdiffValidationError(
                "decoding 'apd' needs a verifier: start the server with --draft-model", "decoding"
            )
        if params.cfg_scale > 0:
            raise VdiffValidationError("cfg_scale is not supported with decoding 'apd'", "cfg_scale")

    def init_sequence(self, seq: Sequence) -> None:
        seq.decoding_state = APDState()

    @property
    def vocab_size(self) -> int:
        assert self.verifier is not None
        return min(self.context.vocab_size, self.verifier.vocab_size or self.context.vocab_size)

    def prepare(self, seq: Sequence) -> ForwardRequest | None:
        state: APDState = seq.decoding_state
        masked = seq.masked_positions(seq.frontier, seq.gen_len)
        if masked.numel() == 0:
            return None
        canvas_len = seq.canvas.shape[0]
        t = int(masked[0])
        window = seq.params.apd_kv_window
        state.is_windowed = window < canvas_len and getattr(
            self.context.runner.model, "supports_kv_cache", True
        )
        state.frontier, state.right = t, min(t + seq.params.apd_max_lookahead, canvas_len)
        state.left = 0
        if state.is_windowed and state.dllm_kv is not None and state.previous_frontier is not None:
            state.left = max(state.previous_frontier - window + 1, 0)
        shift = 1 if self.context.logit_shift else 0
        past = state.dllm_kv.crop(state.left) if state.left > 0 and state.dllm_kv is not None else None
        return ForwardRequest(
            input_ids=seq.canvas[state.left : state.right].unsqueeze(0),
            position_ids=torch.arange(state.left, state.right),
            logit_indices=torch.arange(t, state.right) - state.left - shift,
            past=None if past is None else [past],
            use_cache=state.is_windowed,
            decided=torch.arange(t, state.right),
        )

    def commit(self, seqs: list[Sequence], results: list[ForwardResult]) -> None:
        if not seqs:
            return
        vocab = self.vocab_size
        steps = [
            _Step(seq, seq.decoding_state, self._dllm_log_probs(result.logits[0], vocab))
            for seq, result in zip(seqs, results, strict=True)
        ]
        lengths = torch.tensor([step.dllm_log_probs.shape[0] for step in steps])
        device = steps[0].dllm_log_probs.device
        dllm = _pad([step.dllm_log_probs for step in steps])
        params = [step.seq.params for step in steps]
        temperature = torch.tensor([p.temperature for p in params], device=device)
        # greedy rows keep their argmax under any filter: only sampled rows with a filter pay the sort
        filtered = any(p.temperature > 0 and (p.top_k > 0 or p.top_p < 1) for p in params)
        top_k = torch.tensor([p.top_k for p in params], device=device) if filtered else None
        top_p = torch.tensor([p.top_p for p in params], device=device) if filtered else None
        weight = torch.tensor([p.apd_mixture_weight for p in params], device=device)
        gumbel = None
        if bool((temperature > 0).any()):
            gumbel = _pad(
                [
                    gumbel_noise(int(n), vocab, step.seq.generator, device)
                    if step.seq.params.temperature > 0
                    else torch.zeros(int(n), vocab, device=device)
                    for step, n in zip(steps, lengths, strict=True)
                ]
            )
        draft = coupled_sample(dllm, temperature, gumbel, top_k, top_p)

        verified = [row for row, p in enumerate(params) if p.apd_mixture_weight < 1]
        ar = torch.zeros_like(dllm)
        ar_rows = self._verify([steps[row] for row in verified], [draft[row] for row in verified], vocab)
        for row, ar_log_probs in zip(verified, ar_rows, strict=True):
            ar[row, : ar_log_probs.shape[0]] = ar_log_probs
        mixture = mixture_log_probs(dllm, ar, weight)
        mixture[..., self._masked_columns(vocab)] = float("-inf")
        target = coupled_sample(mixture, temperature, gumbel, top_k, top_p)
        target = torch.where(weight.view(-1, 1) < 1, target, draft)
        accepted = num_accepted(draft, target, lengths.to(device)).cpu()
        draft = draft.cpu()
        if self.context.stats is not None:
            for row in verified:  # the frontier token is committed unverified: the draft is the rest
                self.context.stats.record_draft(int(lengths[row]) - 1, int(accepted[row]) - 1)
        for row, (step, result) in enumerate(zip(steps, results, strict=True)):
            tokens = draft[row, : int(accepted[row])]
            verified = None
            if is_constrained(step.seq):  # the accepted draft, while the grammar accepts it in order
                length, t = int(lengths[row]), step.state.frontier
                _, tokens = frontier_run(
                    step.seq,
                    torch.arange(t, t + length),
                    draft[row, :length],
                    torch.arange(length) < accepted[row],
                    stop_after_forced=True,
                )
                differs = (tokens != draft[row, : tokens.shape[0]]).nonzero()
                verified = t + int(differs[0]) if differs.numel() else None  # the verifier saw the draft
            self._advance(step, result, tokens, verified)

    def _dllm_log_probs(self, logits: torch.Tensor, vocab: int) -> torch.Tensor:
        logits = logits[:, :vocab].float().clone()
        logits[:, self._masked_columns(vocab)] = float("-inf")
        return logits.log_softmax(dim=-1).clamp_min(-1e9)

    def _masked_columns(self, vocab: int) -> list[int]:
        return [self.context.mask_token_id] if self.context.mask_token_id < vocab else []

    def _verify(self, steps: list[_Step], drafts: list[torch.Tensor], vocab: int) -> list[torch.Tensor]:
        """One batched verifier forward: AR log-probs for every drafted position of every row."""
        if not steps:
            return []
        assert self.verifier is not None
        requests = []
        for step, draft in zip(steps, drafts, strict=True):
            state, seq = step.state, step.seq
            t, right = state.frontier, state.right
            cached = state.ar_kv.length if state.ar_kv is not None else 0
            tokens = torch.cat([seq.canvas[cached:t], draft[: right - t].cpu()])
            step.ar_start = max(t - 1, cached)
            requests.append(
                ForwardRequest(
                    input_ids=tokens.unsqueeze(0),
                    position_ids=torch.arange(cached, right),
                    logit_indices=torch.arange(step.ar_start, right) - cached,
                    past=None if state.ar_kv is None or cached == 0 else [state.ar_kv],
                    use_cache=self.verifier.supports_kv_cache,
                )
            )
        results = self.verifier.runner.execute(requests)
        rows = []
        for step, result in zip(steps, results, strict=True):
            state = step.state
            logits = result.logits[0]
            if step.ar_start == state.frontier:  # position t - 1 is cached: its logits came last step
                assert state.ar_next_logits is not None
                logits = torch.cat([state.ar_next_logits.unsqueeze(0), logits])
                step.ar_start -= 1
            step.ar_logits = logits  # rows for positions ar_start .. right - 1
            step.ar_kv = result.past_key_values
            rows.append(logits[: state.right - state.frontier, :vocab].log_softmax(dim=-1).clamp_min(-1e9))
        return rows

    def _advance(
        self, step: _Step, result: ForwardResult, accepted: torch.Tensor, verified: int | None = None
    ) -> None:
        """Commit `accepted` at the frontier; the verifier's state is kept up to `verified` (default: all
        of it) when a constrained run replaced a drafted token there."""
        seq, state = step.seq, step.state
        t, count = state.frontier, accepted.shape[0]
        seq.commit(torch.arange(t, t + count), accepted)
        if state.is_windowed and result.past_key_values is not None:
            past = state.dllm_kv.crop(state.left) if state.dllm_kv is not None else None
            fresh = SequenceKV.from_batch(result.past_key_values, 0, 0, state.right - state.left)
            state.dllm_kv = fresh if past is None or state.left == 0 else past.concat(fresh)
        state.previous_frontier = t
        if getattr(step, "ar_logits", None) is not None:
            self._advance_verifier(step, t + count if verified is None else verified)
        state.num_steps += 1
        state.num_accepted += count

    def _advance_verifier(self, step: _Step, new_frontier: int) -> None:
        state = step.state
        state.ar_next_logits = step.ar_logits[new_frontier - 1 - step.ar_start]
        if step.ar_kv is None:
            return
        cached = state.ar_kv.length if state.ar_kv is not None else 0
        fresh = SequenceKV.from_batch(step.ar_kv, 0, 0, state.right - cached)
        combined = fresh if state.ar_kv is None or cached == 0 else state.ar_kv.concat(fresh)
        state.ar_kv = combined.crop(new_frontier)


def _pad(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack [n_i, V] tensors into [B, max n_i, V] with zeros."""
    width = max(row.shape[0] for row in rows)
    out = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
    for index, row in enumerate(rows):
        out[index, : row.shape[0]] = row
    return out
