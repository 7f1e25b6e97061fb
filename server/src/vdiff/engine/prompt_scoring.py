"""Prompt scoring (prompt_logprobs, completions echo + logprobs): each prompt token's log-probability.

A masked diffusion model has no left-to-right likelihood of its own; the one that splits over any
suffix is the left-to-right factorization: token i's logprob is log p(x_i | x_<i) with positions
[i, n) of the prompt masked, so that a client summing the logprobs of the last tokens (lm-eval's
loglikelihood: context + continuation, one prompt) gets the continuation's conditional log-likelihood
under the left-to-right unmasking order. It is exact (no Monte Carlo) and needs no split point, which
the OpenAI protocol does not send; LLaDA's Monte Carlo bound needs one (docs/api-reference.md).

Each step scores up to SCORING_ROWS_PER_STEP positions of a sequence: one row per position, the prefix
followed by at least `canvas_window` masks (the canvas the model decodes with, so that the position is
predicted as in generation; never max_tokens, so the score does not depend on it), batched with every
other sequence's work. Generation starts once the whole prompt is scored.
"""

from __future__ import annotations

import torch

from vdiff.engine.decoding.base import ForwardRequest, ForwardResult
from vdiff.engine.decoding.sampling import positions
from vdiff.engine.outputs import TokenLogprob
from vdiff.engine.sequence import Sequence

SCORING_ROWS_PER_STEP = 8
"""Prompt positions one sequence scores per step (rows of its forward)."""


class PromptScorer:
    def __init__(self, mask_token_id: int, logit_shift: bool, max_model_len: int) -> None:
        self.mask_token_id = mask_token_id
        self.shift = 1 if logit_shift else 0
        self.max_model_len = max_model_len

    @staticmethod
    def start(seq: Sequence) -> None:
        seq.prompt_logprobs = [None]
        seq.num_scored = 1

    def prepare(self, seq: Sequence) -> ForwardRequest:
        scored = torch.arange(seq.num_scored, min(seq.num_scored + SCORING_ROWS_PER_STEP, seq.prompt_len))
        window = seq.params.canvas_window if (seq.params.canvas_window or 0) > 0 else seq.params.max_tokens
        length = min(self.max_model_len, int(scored[-1]) + window)
        canvas = torch.full((length,), self.mask_token_id, dtype=torch.int64)
        shown = min(length, seq.prompt_len)
        canvas[:shown] = seq.canvas[:shown]
        rows = canvas.repeat(scored.numel(), 1)
        rows[torch.arange(length).view(1, -1) >= scored.view(-1, 1)] = self.mask_token_id
        return ForwardRequest(
            input_ids=rows,
            position_ids=positions(0, length),
            logit_indices=scored - self.shift,
            decided=scored,
        )

    def commit(self, seq: Sequence, request: ForwardRequest, result: ForwardResult) -> None:
        """Row j's prediction at its own position j; the rest of its logits are not used."""
        scored = request.decided
        assert scored is not None and seq.prompt_logprobs is not None
        diagonal = torch.arange(scored.numel(), device=result.logits.device)
        logits = result.logits[diagonal, diagonal]
        normalizer = torch.logsumexp(logits, dim=-1, keepdim=True)
        tokens = seq.canvas[scored].to(logits.device)
        chosen_logits = logits.gather(-1, tokens[:, None])
        ranks = ((logits > chosen_logits).sum(dim=-1) + 1).tolist()
        chosen = (chosen_logits - normalizer).squeeze(-1).tolist()
        width = seq.params.prompt_logprobs or 0
        top_values, top_ids = logits.topk(width, dim=-1) if width else (logits[:, :0], logits[:, :0])
        top_values, top_ids = (top_values - normalizer).tolist(), top_ids.long().tolist()
        for row, token in enumerate(tokens.tolist()):
            top = tuple(zip(top_ids[row], top_values[row], strict=True))
            seq.prompt_logprobs.append(TokenLogprob(token, chosen[row], top, ranks[row]))
        seq.num_scored += scored.numel()
