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
    """After the policies committed: one log_softmax and one top-k over the committed rows of all.

    The committed flags and positions of every sequence come back to Python in one .tolist() each; the
    only per-sequence tensor ops are reading its decided canvas positions and picking its committed rows."""
    live = [index for index in raw if not seqs[index].is_finished]  # a finished one failed in this step
    if not live:
        return
    decided = [requests[index].decided for index in live]
    tokens = torch.cat(
        [seqs[index].canvas[positions] for index, positions in zip(live, decided, strict=True)]
    )
    committed = tokens != mask_token_id
    flags = committed.tolist()
    picked, owners, start = [], [], 0
    for index, positions in zip(live, decided, strict=True):
        end = start + positions.numel()
        if any(flags[start:end]):
            logits = raw[index]
            picked.append(logits[committed[start:end].to(logits.device)])
            owners.append((seqs[index], start, end))
        start = end
    if not picked:
        return
    log_probs = torch.cat(picked).log_softmax(dim=-1)
    token_ids = tokens[committed]
    chosen = log_probs.gather(-1, token_ids.to(log_probs.device)[:, None]).squeeze(-1).tolist()
    width = max(seq.params.logprobs for seq, _, _ in owners)
    top_values, top_ids = log_probs.topk(width, dim=-1) if width else (log_probs[:, :0], log_probs[:, :0])
    top_values, top_ids = top_values.tolist(), top_ids.long().tolist()
    all_positions, all_tokens = torch.cat(decided).tolist(), tokens.tolist()
    row = 0
    for seq, start, end in owners:
        k = seq.params.logprobs
        for i in range(start, end):
            if not flags[i]:
                continue
            top = tuple(zip(top_ids[row][:k], top_values[row][:k], strict=True))
            seq.token_logprobs[all_positions[i] - seq.prompt_len] = TokenLogprob(
                all_tokens[i], chosen[row], top
            )
            row += 1
