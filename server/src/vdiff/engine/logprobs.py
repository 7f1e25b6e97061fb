"""Log-probabilities of committed tokens, for every policy and cache mode alike.

A diffusion model commits a token at one step, from the distribution the forward of that step gave
its position: the token's logprob is log softmax of those logits (after classifier-free guidance, before
penalties, temperature and filters: vLLM's default "raw" logprobs), and `top` lists the most likely
tokens of the same distribution. Positions decided but not committed at a step are decided again
later, from a new forward; only the step that commits a position records it.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

import torch

from vdiff.engine.decoding.sampling import guided_logits
from vdiff.engine.outputs import TokenLogprob


def wants_logprobs(seq: Any) -> bool:
    return seq.token_logprobs is not None


def raw_logits(seqs: Seq[Any], results: Seq[Any]) -> dict[int, torch.Tensor]:
    """Before the logits processors replace them: index -> [K, vocab] of the sequences that want logprobs."""
    return {
        index: guided_logits(result.logits, seq.params.cfg_scale)
        for index, (seq, result) in enumerate(zip(seqs, results, strict=True))
        if wants_logprobs(seq)
    }


def record_committed(
    seqs: Seq[Any], requests: Seq[Any], raw: dict[int, torch.Tensor], mask_token_id: int
) -> None:
    """After the policies committed: one log_softmax and one top-k over the committed rows of all."""
    picked, owners = [], []
    for index, logits in raw.items():
        seq, decided = seqs[index], requests[index].decided
        if seq.is_finished:
            continue  # failed in this step
        tokens = seq.canvas[decided]
        committed = (tokens != mask_token_id).nonzero().flatten()
        if committed.numel():
            picked.append(logits[committed.to(logits.device)])
            owners.append((seq, decided[committed], tokens[committed]))
    if not picked:
        return
    log_probs = torch.cat(picked).log_softmax(dim=-1)
    token_ids = torch.cat([tokens for _, _, tokens in owners]).to(log_probs.device)
    chosen = log_probs.gather(-1, token_ids[:, None]).squeeze(-1).tolist()
    width = max(seq.params.logprobs for seq, _, _ in owners)
    top_values, top_ids = log_probs.topk(width, dim=-1) if width else (log_probs[:, :0], log_probs[:, :0])
    top_values, top_ids = top_values.tolist(), top_ids.long().tolist()
    row = 0
    for seq, positions, tokens in owners:
        k = seq.params.logprobs
        for position, token in zip(positions.tolist(), tokens.tolist(), strict=True):
            top = tuple(zip(top_ids[row][:k], top_values[row][:k], strict=True))
            seq.token_logprobs[position - seq.prompt_len] = TokenLogprob(token, chosen[row], top)
            row += 1
