"""vLLM-compatible per-sequence logits processing for diffusion decoding.

One diffusion step decides several canvas positions of a sequence at once, so every sequence owns a
group of logits rows (one per position decided). The rules and their order follow vLLM
(`apply_penalties`, the v1 logits processors): penalties (repetition, frequency, presence),
logit_bias, allowed_token_ids, min_tokens, bad words, min_p.

Diffusion-specific choices:
- "output tokens" are the committed (non-mask) tokens of the generation region, wherever they sit on the
  canvas; the mask token is never counted, not even in the prompt.
- min_tokens looks at the generation index of the position a row decides (position - prompt_len), not
  at how many tokens are committed, so it forbids an end token from landing in the first m slots.
- a multi-token bad word is matched against the canvas positions immediately left of the decided
  position (prompt included); any mask among them means no match.
- token ids outside [0, vocab) in logit_bias / allowed_token_ids / bad words / end tokens are ignored.
- if the masking rules (allowed_token_ids, min_tokens, bad words) leave a row without any finite logit,
  the token with the highest logit of the original input row keeps its (penalised, biased) logit, so
  sampling never sees an all -inf row (which would give NaN probabilities).

A sequence's params are read once into SeqRules (cached on the Sequence by process_results), so a step
does no per-field lookups. All index tensors are built on the CPU with loops over sequences (never over
rows or the vocabulary); the arithmetic runs once for all rows on the logits' device. Sequences whose
params are all neutral are not touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vdiff.engine.decoding.sampling import guided_logits
from vdiff.knobs import MIN_TEMPERATURE

_MAX_ABS_BIAS = 100.0


def _field(params: Any, name: str, default: Any) -> Any:
    value = getattr(params, name, None)
    return default if value is None else value


def needs_processing(params: Any) -> bool:
    """True when any of the fields below is set to a non-neutral value."""
    return (
        float(_field(params, "repetition_penalty", 1.0)) != 1.0
        or float(_field(params, "presence_penalty", 0.0)) != 0.0
        or float(_field(params, "frequency_penalty", 0.0)) != 0.0
        or float(_field(params, "min_p", 0.0)) != 0.0
        or bool(_field(params, "logit_bias", None))
        or int(_field(params, "min_tokens", 0)) > 0
        or bool(_field(params, "allowed_token_ids", None))
        or any(len(word) > 0 for word in _field(params, "bad_words_token_ids", ()))
    )


@dataclass(frozen=True, slots=True)
class SeqRules:
    """One sequence's params as the rules use them, for one vocabulary and set of end tokens."""

    vocab: int
    end_token_ids: tuple[int, ...]
    needed: bool
    repetition: float
    frequency: float
    presence: float
    bias_tokens: tuple[int, ...]
    bias_values: tuple[float, ...]
    allowed: tuple[int, ...] | None
    """In-vocabulary allowed_token_ids, or None when unrestricted."""
    min_tokens: int
    min_tokens_ends: tuple[int, ...]
    """Sorted distinct in-vocabulary tokens min_tokens bans (end tokens unless ignore_eos, stop ids)."""
    single_bad: tuple[int, ...]
    multi_bad: tuple[tuple[tuple[int, ...], int], ...]
    """(prefix, last token) of every bad word longer than one token."""
    min_p_offset: float | None
    """T * log(min_p), or None when min_p is off."""


def compile_rules(params: Any, vocab: int, end_token_ids: Sequence[int]) -> SeqRules:
    bias_tokens, bias_values = [], []
    for token, bias in (_field(params, "logit_bias", None) or {}).items():
        if 0 <= int(token) < vocab:
            bias_tokens.append(int(token))
            bias_values.append(min(max(float(bias), -_MAX_ABS_BIAS), _MAX_ABS_BIAS))
    allowed_ids = _field(params, "allowed_token_ids", None)
    allowed = tuple(int(t) for t in allowed_ids if 0 <= int(t) < vocab) if allowed_ids else None
    min_tokens = int(_field(params, "min_tokens", 0))
    ends: list[int] = []
    if min_tokens > 0:
        ends = [] if _field(params, "ignore_eos", False) else list(end_token_ids)
        ends += list(_field(params, "stop_token_ids", ()))
    single_bad, multi_bad = [], []
    for word in _field(params, "bad_words_token_ids", ()):
        word = [int(t) for t in word]
        if not word or not 0 <= word[-1] < vocab:
            continue
        if len(word) == 1:
            single_bad.append(word[0])
        else:
            multi_bad.append((tuple(word[:-1]), word[-1]))
    min_p, temperature = float(_field(params, "min_p", 0.0)), float(_field(params, "temperature", 1.0))
    # p_i < min_p * p_max  <=>  l_i / T < l_max / T + log(min_p)  <=>  l_i < l_max + T * log(min_p).
    min_p_active = min_p > 0 and temperature > 0
    return SeqRules(
        vocab=vocab,
        end_token_ids=tuple(end_token_ids),
        needed=needs_processing(params),
        repetition=float(_field(params, "repetition_penalty", 1.0)),
        frequency=float(_field(params, "frequency_penalty", 0.0)),
        presence=float(_field(params, "presence_penalty", 0.0)),
        bias_tokens=tuple(bias_tokens),
        bias_values=tuple(bias_values),
        allowed=allowed,
        min_tokens=min_tokens,
        min_tokens_ends=tuple(sorted({int(t) for t in ends if 0 <= int(t) < vocab})),
        single_bad=tuple(single_bad),
        multi_bad=tuple(multi_bad),
        min_p_offset=temperature * math.log(min(min_p, 1.0)) if min_p_active else None,
    )


@dataclass(slots=True)
class _Rows:
    """The rows of the processed sequences, numbered locally 0..R-1 (CPU tensors)."""

    row_start: torch.Tensor
    """[A] first local row of each processed sequence."""
    row_count: torch.Tensor
    """[A] rows of each processed sequence."""
    seq_of_row: torch.Tensor
    """[R] local sequence of each row."""
    position: torch.Tensor
    """[R] canvas index each row decides."""


def process_logits(
    logits: torch.Tensor,
    row_counts: Sequence[int],
    params: Sequence[Any],
    canvases: Sequence[torch.Tensor],
    prompt_lens: Sequence[int],
    positions: Sequence[torch.Tensor],
    mask_token_id: int,
    end_token_ids: Sequence[int],
    *,
    in_place: bool = False,
    rules: Sequence[SeqRules] | None = None,
) -> torch.Tensor:
    """Apply every sequence's logits processing to its rows; returns a new [N, V] tensor (or `logits`
    itself, changed, with in_place: for a caller whose tensor is already a private copy). `rules`, one
    per sequence, are compile_rules of the params for this vocabulary and these end tokens (cached)."""
    if sum(row_counts) != logits.shape[0]:
        raise ValueError(f"row_counts sum to {sum(row_counts)}, logits have {logits.shape[0]} rows")
    vocab, device = logits.shape[1], logits.device
    if rules is None:
        rules = [compile_rules(p, vocab, end_token_ids) for p in params]
    starts = [0]
    for count in row_counts:
        starts.append(starts[-1] + count)
    seqs = [i for i, r in enumerate(rules) if row_counts[i] > 0 and r.needed]
    if not seqs:
        return logits if in_place else logits.clone()
    for i in seqs:
        if positions[i].numel() != row_counts[i]:
            raise ValueError(f"sequence {i}: {positions[i].numel()} positions for {row_counts[i]} rows")

    counts = [row_counts[i] for i in seqs]
    row_start = [0]
    for count in counts[:-1]:
        row_start.append(row_start[-1] + count)
    rows = _Rows(
        row_start=torch.tensor(row_start, dtype=torch.int64),
        row_count=torch.tensor(counts, dtype=torch.int64),
        seq_of_row=torch.tensor([a for a, n in enumerate(counts) for _ in range(n)], dtype=torch.int64),
        position=torch.cat([positions[i].reshape(-1) for i in seqs]).to("cpu", torch.int64),
    )
    chosen = [rules[i] for i in seqs]
    seq_prompt_lens = torch.tensor([int(prompt_lens[i]) for i in seqs], dtype=torch.int64)
    # [A, L] canvases, the mask and the padding read -1 (no token)
    canvas = torch.nn.utils.rnn.pad_sequence(
        [canvases[i].reshape(-1) for i in seqs], batch_first=True, padding_value=-1
    ).to("cpu", torch.int64)
    canvas.masked_fill_(canvas == mask_token_id, -1)

    every_row = sum(row_counts[i] for i in seqs) == logits.shape[0]  # then the rows are 0..N-1 in order
    if in_place and not logits.is_contiguous():
        in_place = False  # the rules index the flat storage: work on a contiguous copy
    private = logits if in_place else logits.clone(memory_format=torch.contiguous_format)
    if every_row:
        x = private  # the rules below work in place on x
    else:
        global_rows = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in seqs]).to(device)
        x = logits[global_rows]
    allowed = _allowed_mask(vocab, device, rows, chosen)
    banned = _banned_pairs(rows, chosen, canvas, seq_prompt_lens)
    # only rows a rule may empty need the fallback (min_tokens bans touch a few rows of a block)
    masked_rows = [
        r for r in (allowed[0].cpu() if allowed else None, banned[0] if banned else None) if r is not None
    ]
    guarded = torch.unique(torch.cat(masked_rows)).to(device) if masked_rows else None
    best = x[guarded].argmax(dim=-1, keepdim=True) if guarded is not None else None

    _apply_token_rules(x, rows, chosen, canvas, seq_prompt_lens)
    if guarded is not None and best is not None:
        best_logit = x[guarded].gather(1, best)
        if allowed is not None:
            restricted_rows, keep = allowed
            x[restricted_rows] = x[restricted_rows].masked_fill(~keep, float("-inf"))
        if banned is not None:
            x.index_put_(tuple(t.to(device) for t in banned), torch.tensor(float("-inf"), device=device))
        # Never an all -inf row: the original row's best token keeps its logit (see the module docstring).
        guarded_rows = x[guarded]
        dead = ~(guarded_rows > float("-inf")).any(dim=-1, keepdim=True)
        guarded_rows.scatter_(1, best, torch.where(dead, best_logit, guarded_rows.gather(1, best)))
        x[guarded] = guarded_rows

    _apply_min_p(x, rows, chosen)
    if every_row:
        return x
    private[global_rows] = x
    return private


def _expand_to_rows(pair_seq: torch.Tensor, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """For pairs owned by local sequences pair_seq [P]: (pair index, local row) for every row of the owner."""
    reps = rows.row_count[pair_seq]
    pair_index = torch.repeat_interleave(torch.arange(pair_seq.numel()), reps)
    first = torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    offset = torch.arange(pair_index.numel()) - first
    return pair_index, rows.row_start[pair_seq][pair_index] + offset


def _apply_token_rules(
    x: torch.Tensor, rows: _Rows, rules: list[SeqRules], canvas: torch.Tensor, prompt_lens: torch.Tensor
) -> None:
    """Penalties, then logit_bias, on the (row, token) pairs they can change, in one gather and scatter.

    Sparse on purpose: only tokens of a sequence's history (prompt or committed output) or of its
    logit_bias change, so the work scales with the canvases, never with [rows, vocab]. A pair key is
    a * vocab + t for local sequence a and token t; the mask and the padding read -1 and are not keys."""
    penalised = any(r.repetition != 1 or r.frequency != 0 or r.presence != 0 for r in rules)
    bias_seq, bias_tokens = _pairs([r.bias_tokens for r in rules])
    if not penalised and not bias_seq:
        return
    vocab, device = x.shape[1], x.device
    if penalised:
        valid = (canvas >= 0) & (canvas < vocab)
        history = (torch.arange(canvas.shape[0])[:, None] * vocab + canvas)[valid]
        in_output = (torch.arange(canvas.shape[1])[None, :] >= prompt_lens[:, None]).expand_as(canvas)[valid]
    else:
        history, in_output = torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool)
    bias_keys = torch.tensor(bias_seq, dtype=torch.int64) * vocab + torch.tensor(
        bias_tokens, dtype=torch.int64
    )
    keys, inverse = torch.unique(torch.cat([history, bias_keys]), sorted=True, return_inverse=True)
    num_pairs, num_history = keys.numel(), history.numel()
    history_pair = inverse[:num_history]
    seen = torch.bincount(history_pair, minlength=num_pairs) > 0
    count = torch.bincount(history_pair[in_output], minlength=num_pairs)
    bias = torch.zeros(num_pairs, dtype=x.dtype)
    _, bias_values = _pairs([r.bias_values for r in rules])
    bias.index_put_((inverse[num_history:],), torch.tensor(bias_values, dtype=x.dtype), accumulate=True)

    pair_seq = keys // vocab
    factors = torch.tensor([[r.repetition, r.frequency, r.presence] for r in rules], dtype=x.dtype)[pair_seq]
    repeated = any(r.repetition != 1 for r in rules)  # no tensor op (and no sync) to find out
    # The additive part at once: within float rounding of subtracting each term in turn.
    offset = bias - factors[:, 1] * count - factors[:, 2] * (count > 0)
    per_pair = torch.stack([torch.where(seen, factors[:, 0], 1.0), offset], dim=1) if repeated else offset
    # Every pair applies to every row of its sequence. Rows of a sequence are contiguous, so the j-th
    # copy of pair p (row row_start + j, token t) has the flat index (row_start * vocab + t) + j * vocab,
    # i.e. base[p] + i * vocab for the i-th expanded element, with base[p] = first[p] - start[p] * vocab.
    reps = rows.row_count[pair_seq]
    starts = torch.cumsum(reps, 0) - reps
    base = (rows.row_start[pair_seq] - starts) * vocab + keys % vocab
    flat = (torch.repeat_interleave(base, reps) + torch.arange(int(reps.sum())) * vocab).to(device)
    table = torch.repeat_interleave(per_pair, reps, dim=0).to(device)
    flat_x = x.view(-1)
    values = flat_x[flat]
    if repeated:
        penalty = table[:, 0]
        values = torch.where(values > 0, values / penalty, values * penalty) + table[:, 1]
    else:
        values = values + table
    # an extreme penalty (repetition_penalty 1e-300 divides by an underflowed 0) must not give +inf,
    # whose softmax is NaN, even after the sampler divides by the smallest temperature; only the
    # values changed here can have grown
    flat_x[flat] = values.clamp_(max=torch.finfo(x.dtype).max * MIN_TEMPERATURE)


def _pairs(per_seq: list[tuple[int, ...]] | list[tuple[float, ...]]) -> tuple[list[int], list]:
    """(local sequence, item) for every item of every sequence's tuple."""
    owners: list[int] = []
    items: list = []
    for a, values in enumerate(per_seq):
        owners += [a] * len(values)
        items += values
    return owners, items


def _allowed_mask(
    vocab: int, device: torch.device, rows: _Rows, rules: list[SeqRules]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(local rows of the restricted sequences, [rows, vocab] bool of their allowed tokens), or None."""
    restricted = [a for a, r in enumerate(rules) if r.allowed is not None]
    if not restricted:
        return None
    pair_seq, pair_token = _pairs([rules[a].allowed or () for a in restricted])
    keep = torch.zeros(len(restricted), vocab, dtype=torch.bool, device=device)
    keep[torch.tensor(pair_seq, dtype=torch.int64), torch.tensor(pair_token, dtype=torch.int64)] = True
    restricted_t = torch.tensor(restricted)
    local_rows = torch.cat([rows.row_start[a] + torch.arange(int(rows.row_count[a])) for a in restricted])
    restricted_of_row = torch.searchsorted(restricted_t, rows.seq_of_row[local_rows])
    return local_rows.to(device), keep[restricted_of_row.to(device)]


def _banned_pairs(
    rows: _Rows, rules: list[SeqRules], canvas: torch.Tensor, prompt_lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(local row, token) pairs forbidden by min_tokens and bad words (CPU), or None if there are none."""
    ban_rows: list[torch.Tensor] = []
    ban_tokens: list[torch.Tensor] = []

    # min_tokens: the end tokens of the sequence, on rows deciding a generation index below min_tokens.
    pair_seq, pair_token = _pairs([r.min_tokens_ends if r.min_tokens > 0 else () for r in rules])
    if pair_seq:
        min_tokens = torch.tensor([r.min_tokens for r in rules], dtype=torch.int64)
        pair_index, local_row = _expand_to_rows(torch.tensor(pair_seq), rows)
        seq = torch.tensor(pair_seq)[pair_index]
        generation_index = rows.position[local_row] - prompt_lens[seq]
        early = generation_index < min_tokens[seq]
        ban_rows.append(local_row[early])
        ban_tokens.append(torch.tensor(pair_token)[pair_index][early])

    # Bad words: one-token words everywhere, longer ones where the canvas left of the row spells the prefix.
    single_seq, single_token = _pairs([r.single_bad for r in rules])
    if single_seq:
        pair_index, local_row = _expand_to_rows(torch.tensor(single_seq), rows)
        ban_rows.append(local_row)
        ban_tokens.append(torch.tensor(single_token)[pair_index])
    multi_seq = [a for a, r in enumerate(rules) for _ in r.multi_bad]
    if multi_seq:
        words = [word for r in rules for word in r.multi_bad]
        local_row, token = _bad_word_matches(rows, multi_seq, words, canvas)
        ban_rows.append(local_row)
        ban_tokens.append(token)

    if not ban_rows or sum(r.numel() for r in ban_rows) == 0:
        return None
    return torch.cat(ban_rows), torch.cat(ban_tokens)


def _bad_word_matches(
    rows: _Rows, word_seq: list[int], words: list[tuple[tuple[int, ...], int]], canvas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(local row, token) for every multi-token bad word whose prefix sits just left of the row's position."""
    width = max(len(prefix) for prefix, _ in words)
    # Prefixes right-aligned so column `width - 1` is the token just left of the decided position.
    prefix = torch.full((len(words), width), -1, dtype=torch.int64)
    used = torch.zeros((len(words), width), dtype=torch.bool)
    for w, (tokens, _) in enumerate(words):
        prefix[w, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.int64)
        used[w, width - len(tokens) :] = True

    word_index, local_row = _expand_to_rows(torch.tensor(word_seq), rows)
    seq = torch.tensor(word_seq)[word_index]
    index = rows.position[local_row][:, None] - width + torch.arange(width)[None, :]
    before = canvas[seq[:, None], index.clamp(min=0)].masked_fill(index < 0, -1)
    # A mask or a position left of the canvas reads -1, which no prefix token equals.
    matched = ((before == prefix[word_index]) | ~used[word_index]).all(dim=-1)
    return local_row[matched], torch.tensor([last for _, last in words])[word_index][matched]


def _apply_min_p(x: torch.Tensor, rows: _Rows, rules: list[SeqRules]) -> None:
    offsets = [r.min_p_offset for r in rules]
    if all(offset is None for offset in offsets):
        return
    row_offset = torch.tensor([math.nan if o is None else o for o in offsets], dtype=x.dtype)[rows.seq_of_row]
    selected = torch.nonzero(~row_offset.isnan()).squeeze(-1)
    device = x.device
    if selected.numel() == x.shape[0]:
        x.masked_fill_(x < x.amax(dim=-1, keepdim=True) + row_offset[:, None].to(device), float("-inf"))
        return
    sub_rows = selected.to(device)
    sub = x[sub_rows]
    threshold = sub.amax(dim=-1, keepdim=True) + row_offset[selected][:, None].to(device)
    x[sub_rows] = sub.masked_fill(sub < threshold, float("-inf"))


def process_results(
    seqs: Sequence[Any],
    requests: Sequence[Any],
    results: Sequence[Any],
    mask_token_id: int,
    end_token_ids: Sequence[int],
) -> None:
    """Apply the rules to the forward results of the sequences that need them, in place, batched.

    Classifier-free guidance is mixed first (a -inf from a rule on both rows would give NaN), so a
    processed result holds one row: the policies' guided_logits passes it through."""
    chosen = [index for index, seq in enumerate(seqs) if seq.needs_logits_processing]
    if not chosen:
        return
    batched = [results[index].logits for index in chosen]
    if all(logits.shape[0] == 1 for logits in batched):  # no classifier-free guidance row: no mixing
        sizes = [logits.shape[1] for logits in batched]
        joined = torch.cat(batched, dim=1)[0] if len(batched) > 1 else batched[0][0]
    else:
        mixed = [guided_logits(results[index].logits, seqs[index].params.cfg_scale) for index in chosen]
        sizes = [logits.shape[0] for logits in mixed]
        joined = torch.cat(mixed) if len(mixed) > 1 else mixed[0]
    vocab, ends = joined.shape[-1], tuple(end_token_ids)
    rules = []
    for index in chosen:
        seq = seqs[index]
        cached = seq.logits_rules
        if cached is None or cached.vocab != vocab or cached.end_token_ids != ends:
            cached = seq.logits_rules = compile_rules(seq.params, vocab, ends)  # once per sequence
        rules.append(cached)
    processed = process_logits(
        joined,
        sizes,
        [seqs[index].params for index in chosen],
        [seqs[index].canvas for index in chosen],
        [seqs[index].prompt_len for index in chosen],
        [requests[index].decided for index in chosen],
        mask_token_id,
        end_token_ids,
        in_place=len(chosen) > 1,  # torch.cat made a private copy; a single one is a view of the result
        rules=rules,
    )
    for index, chunk in zip(chosen, processed.unsqueeze(0).split(sizes, dim=1), strict=True):
        results[index].logits = chunk
