"""process_logits against a naive per-row, per-token reference, plus one test per rule."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
from vdiff.engine.decoding.logits_processors import needs_processing, process_logits

VOCAB = 11
MASK = 10
EOS = 9
NEG_INF = float("-inf")


def make_params(**overrides: object) -> SimpleNamespace:
    fields: dict[str, object] = {
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "min_p": 0.0,
        "temperature": 1.0,
        "logit_bias": None,
        "min_tokens": 0,
        "allowed_token_ids": None,
        "bad_words_token_ids": None,
        "stop_token_ids": [],
        "ignore_eos": False,
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def reference(logits, row_counts, params, canvases, prompt_lens, positions, mask_token_id, end_token_ids):
    """The rules written out row by row, token by token."""
    out = [list(map(float, row)) for row in logits.tolist()]
    row = 0
    assert sum(row_counts) == len(out)
    for p, canvas, prompt_len, pos in zip(params, canvases, prompt_lens, positions, strict=True):
        canvas = canvas.tolist()
        prompt = [t for t in canvas[:prompt_len] if t != mask_token_id]
        output = [t for t in canvas[prompt_len:] if t != mask_token_id]
        ends = ([] if p.ignore_eos else list(end_token_ids)) + list(p.stop_token_ids)
        for q in pos.tolist():
            original = out[row][:]
            values = out[row]
            for t in range(len(values)):
                if t in prompt or t in output:
                    r = p.repetition_penalty
                    values[t] = values[t] / r if values[t] > 0 else values[t] * r
                values[t] -= p.frequency_penalty * output.count(t)
                values[t] -= p.presence_penalty * (1.0 if t in output else 0.0)
            for t, bias in (p.logit_bias or {}).items():
                values[t] += max(-100.0, min(100.0, bias))
            kept = values[:]
            if p.allowed_token_ids:
                for t in range(len(values)):
                    if t not in p.allowed_token_ids:
                        values[t] = NEG_INF
            if q - prompt_len < p.min_tokens:
                for t in ends:
                    values[t] = NEG_INF
            for word in p.bad_words_token_ids or []:
                prefix = word[:-1]
                start = q - len(prefix)
                if start >= 0 and canvas[start:q] == prefix:
                    values[word[-1]] = NEG_INF
            if all(v == NEG_INF for v in values):
                best = max(range(len(original)), key=lambda t: original[t])
                values[best] = kept[best]
            if p.min_p > 0 and p.temperature > 0:
                cutoff = max(values) + p.temperature * math.log(p.min_p)
                for t in range(len(values)):
                    if values[t] < cutoff:
                        values[t] = NEG_INF
            row += 1
    return torch.tensor(out, dtype=torch.float32).reshape(-1, logits.shape[1])


def run_one(logits_row_list, params, canvas, prompt_len, positions, end_token_ids=(EOS,)):
    logits = torch.tensor(logits_row_list, dtype=torch.float32)
    return process_logits(
        logits,
        [logits.shape[0]],
        [params],
        [torch.tensor(canvas, dtype=torch.int64)],
        [prompt_len],
        [torch.tensor(positions, dtype=torch.int64)],
        MASK,
        list(end_token_ids),
    )


def random_params(rng: random.Random) -> SimpleNamespace:
    choice = rng.random
    return make_params(
        repetition_penalty=rng.choice([1.0, 1.3, 0.7]) if choice() < 0.6 else 1.0,
        presence_penalty=rng.choice([0.0, 0.5, -0.4]) if choice() < 0.5 else 0.0,
        frequency_penalty=rng.choice([0.0, 0.3, 1.1]) if choice() < 0.5 else 0.0,
        min_p=rng.choice([0.05, 0.3]) if choice() < 0.4 else 0.0,
        temperature=rng.choice([0.0, 0.5, 1.0, 2.0]),
        logit_bias={rng.randrange(VOCAB): rng.uniform(-5, 5) for _ in range(rng.randrange(3))}
        if choice() < 0.4
        else None,
        min_tokens=rng.randrange(6) if choice() < 0.4 else 0,
        # Few allowed ids, EOS among them, so bans and min_tokens sometimes empty a row (the fallback).
        allowed_token_ids=rng.sample([0, 1, 2, 3, EOS], rng.randrange(1, 4)) if choice() < 0.4 else None,
        bad_words_token_ids=[
            [rng.randrange(4) for _ in range(rng.randrange(1, 4))] for _ in range(rng.randrange(1, 4))
        ]
        if choice() < 0.5
        else None,
        stop_token_ids=[rng.randrange(VOCAB)] if choice() < 0.3 else [],
        ignore_eos=choice() < 0.3,
    )


def random_batch(rng: random.Random, num_seqs: int):
    row_counts, params, canvases, prompt_lens, positions = [], [], [], [], []
    for _ in range(num_seqs):
        prompt_len = rng.randrange(1, 5)
        gen_len = rng.randrange(1, 8)
        # Small token range so prefixes of bad words and repeated tokens actually occur.
        canvas = [rng.randrange(4) for _ in range(prompt_len)]
        canvas += [MASK if rng.random() < 0.5 else rng.randrange(VOCAB - 1) for _ in range(gen_len)]
        candidates = list(range(prompt_len, prompt_len + gen_len))
        chosen = sorted(rng.sample(candidates, rng.randrange(0, gen_len + 1)))
        for q in chosen:
            canvas[q] = MASK
        row_counts.append(len(chosen))
        params.append(random_params(rng) if rng.random() < 0.85 else make_params())
        canvases.append(torch.tensor(canvas, dtype=torch.int64))
        prompt_lens.append(prompt_len)
        positions.append(torch.tensor(chosen, dtype=torch.int64))
    logits = torch.randn(
        sum(row_counts), VOCAB, generator=torch.Generator().manual_seed(rng.randrange(10**6))
    )
    logits = logits * 3
    return logits, row_counts, params, canvases, prompt_lens, positions


@pytest.mark.parametrize("seed", range(120))
def test_matches_reference_on_random_batches(seed: int) -> None:
    rng = random.Random(seed)
    batch = random_batch(rng, rng.randrange(1, 6))
    logits = batch[0]
    before = logits.clone()
    canvases_before = [c.clone() for c in batch[3]]
    got = process_logits(*batch, MASK, [EOS])
    want = reference(*batch, MASK, [EOS])
    assert got.shape == logits.shape
    assert not torch.isnan(got).any()
    assert (got > NEG_INF).any(dim=-1).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits, before)
    assert all(torch.equal(a, b) for a, b in zip(batch[3], canvases_before, strict=True))


def test_neutral_params_return_identical_logits() -> None:
    logits = torch.randn(5, VOCAB)
    canvases = [torch.tensor([1, 2, MASK, 3, MASK]), torch.tensor([4, MASK, MASK, MASK])]
    positions = [torch.tensor([2, 4]), torch.tensor([1, 2, 3])]
    params = [make_params(), make_params(temperature=0.0)]
    assert not any(needs_processing(p) for p in params)
    got = process_logits(logits, [2, 3], params, canvases, [1, 1], positions, MASK, [EOS])
    assert torch.equal(got, logits)
    assert got.data_ptr() != logits.data_ptr()


def test_neutral_sequence_untouched_next_to_processed_one() -> None:
    logits = torch.randn(4, VOCAB)
    canvases = [torch.tensor([1, 1, MASK, MASK]), torch.tensor([1, 1, MASK, MASK])]
    positions = [torch.tensor([2, 3]), torch.tensor([2, 3])]
    params = [make_params(repetition_penalty=2.0, logit_bias={3: 7.0}), make_params()]
    got = process_logits(logits, [2, 2], params, canvases, [2, 2], positions, MASK, [EOS])
    assert torch.equal(got[2:], logits[2:])
    assert not torch.equal(got[:2], logits[:2])


def test_needs_processing_flags_each_field() -> None:
    assert not needs_processing(make_params())
    assert not needs_processing(make_params(ignore_eos=True, stop_token_ids=[3], logit_bias={}))
    for field, value in [
        ("repetition_penalty", 1.2),
        ("presence_penalty", 0.1),
        ("frequency_penalty", -0.1),
        ("min_p", 0.1),
        ("logit_bias", {1: 2.0}),
        ("min_tokens", 1),
        ("allowed_token_ids", [1]),
        ("bad_words_token_ids", [[1]]),
    ]:
        assert needs_processing(make_params(**{field: value})), field


def test_large_logit_bias_forces_token_and_is_clamped() -> None:
    row = [5.0, 1.0, 0.0, -1.0] + [0.0] * (VOCAB - 4)
    got = run_one([row], make_params(logit_bias={3: 1000.0}), [1, MASK], 1, [1])
    assert int(got.argmax()) == 3
    assert float(got[0, 3]) == pytest.approx(-1.0 + 100.0)


def test_allowed_token_ids_restrict_argmax() -> None:
    row = [5.0, 4.0, 3.0, 2.0] + [0.0] * (VOCAB - 4)
    got = run_one([row, row], make_params(allowed_token_ids=[2, 3]), [1, MASK, MASK], 1, [1, 2])
    assert got.argmax(dim=-1).tolist() == [2, 2]
    assert torch.isinf(got[:, [0, 1, 4, 5]]).all()
    assert torch.equal(got[:, [2, 3]], torch.tensor([[3.0, 2.0], [3.0, 2.0]]))


def test_min_tokens_forbids_end_tokens_only_before_m() -> None:
    row = [0.0] * VOCAB
    row[EOS] = 10.0
    params = make_params(min_tokens=2, stop_token_ids=[4])
    # Prompt of 2, rows deciding generation indices 0, 1, 2, 3.
    got = run_one([row] * 4, params, [1, 2, MASK, MASK, MASK, MASK], 2, [2, 3, 4, 5])
    assert got[:2, EOS].tolist() == [NEG_INF, NEG_INF]
    assert got[:2, 4].tolist() == [NEG_INF, NEG_INF]
    assert got[2:, EOS].tolist() == [10.0, 10.0]
    assert got[2:, 4].tolist() == [0.0, 0.0]
    ignore = run_one(
        [row] * 4, make_params(min_tokens=2, ignore_eos=True), [1, 2] + [MASK] * 4, 2, [2, 3, 4, 5]
    )
    assert ignore[:, EOS].tolist() == [10.0] * 4


def test_repetition_penalty_divides_positive_multiplies_negative() -> None:
    row = [2.0, -2.0, 2.0, -2.0, 3.0] + [0.0] * (VOCAB - 5)
    # Token 0 in the prompt, token 1 committed in the generation region; 2 and 3 never seen.
    got = run_one([row], make_params(repetition_penalty=2.0), [0, 5, MASK, 1], 2, [2])
    assert got[0, :5].tolist() == [1.0, -4.0, 2.0, -2.0, 3.0]


def test_frequency_and_presence_count_only_committed_output_tokens() -> None:
    row = [1.0] * VOCAB
    # Prompt holds token 2 twice; generation region holds token 3 twice, token 4 once, and masks.
    canvas = [2, 2, 3, MASK, 3, 4, MASK]
    got = run_one([row, row], make_params(frequency_penalty=0.5, presence_penalty=0.25), canvas, 2, [3, 6])
    expected = [1.0] * VOCAB
    expected[3] = 1.0 - 0.5 * 2 - 0.25
    expected[4] = 1.0 - 0.5 - 0.25
    assert got.tolist() == [expected, expected]
    assert got[0, MASK] == 1.0 and got[0, 2] == 1.0


def test_single_token_bad_word_is_banned_everywhere() -> None:
    row = [1.0] * VOCAB
    got = run_one([row, row], make_params(bad_words_token_ids=[[6]]), [1, MASK, 2, MASK], 1, [1, 3])
    assert got[:, 6].tolist() == [NEG_INF, NEG_INF]
    assert (got[:, :6] == 1.0).all()


def test_multi_token_bad_word_needs_committed_prefix_just_left() -> None:
    row = [1.0] * VOCAB
    params = make_params(bad_words_token_ids=[[1, 2, 7]])
    # Rows at 4 (after 1, 2: banned), 5 (after 2, MASK: not), 7 (after 2, 1: wrong order).
    canvas = [0, 0, 1, 2, MASK, MASK, 1, MASK]
    got = run_one([row] * 3, params, canvas, 1, [4, 5, 7])
    assert got[:, 7].tolist() == [NEG_INF, 1.0, 1.0]
    # The prefix may reach back into the prompt.
    got = run_one([row], params, [1, 2, MASK], 2, [2])
    assert got[0, 7] == NEG_INF
    # A prefix longer than the canvas on the left never matches.
    got = run_one([row], params, [2, MASK], 1, [1])
    assert got[0, 7] == 1.0


def test_min_p_masks_low_probability_tokens_with_temperature() -> None:
    row = [0.0] * VOCAB
    row[0], row[1], row[2] = 4.0, 3.5, 1.0
    got = run_one([row], make_params(min_p=0.5, temperature=1.0), [1, MASK], 1, [1])
    # exp(-0.5) = 0.61 >= 0.5 kept; exp(-3) < 0.5 masked.
    assert got[0, :2].tolist() == [4.0, 3.5]
    assert torch.isinf(got[0, 2:]).all()
    hot = run_one([row], make_params(min_p=0.5, temperature=10.0), [1, MASK], 1, [1])
    assert (hot[0, :3] > NEG_INF).all()  # a high temperature flattens the distribution


def test_min_p_with_zero_temperature_changes_nothing() -> None:
    logits = torch.randn(2, VOCAB)
    got = run_one(logits.tolist(), make_params(min_p=0.9, temperature=0.0), [1, MASK, MASK], 1, [1, 2])
    assert torch.equal(got, logits)


def test_all_masked_fallback_keeps_best_original_token() -> None:
    row = [0.0] * VOCAB
    row[3], row[EOS] = 2.0, 5.0
    # Only EOS allowed, but min_tokens forbids it: the row would be all -inf.
    params = make_params(allowed_token_ids=[EOS], min_tokens=3, logit_bias={EOS: 1.0})
    got = run_one([row, row], params, [1, MASK, MASK, MASK, MASK], 1, [1, 4])
    assert not torch.isnan(got).any()
    assert got[0, EOS] == 6.0 and (got[0, :EOS] == NEG_INF).all() and got[0, MASK] == NEG_INF
    # Generation index 3 is past min_tokens: EOS is simply allowed there.
    assert got[1, EOS] == 6.0 and torch.isinf(got[1, :EOS]).all()


def test_inputs_are_not_mutated() -> None:
    logits = torch.randn(3, VOCAB)
    canvas = torch.tensor([1, 2, MASK, 3, MASK, MASK])
    positions = torch.tensor([2, 4, 5])
    params = make_params(
        repetition_penalty=1.5, frequency_penalty=0.3, allowed_token_ids=[1, 2, 3], min_p=0.1
    )
    copies = (logits.clone(), canvas.clone(), positions.clone())
    got = process_logits(logits, [3], [params], [canvas], [2], [positions], MASK, [EOS])
    assert not torch.equal(got, logits)
    assert (
        torch.equal(logits, copies[0])
        and torch.equal(canvas, copies[1])
        and torch.equal(positions, copies[2])
    )


def test_sequences_with_no_rows_are_skipped() -> None:
    logits = torch.randn(2, VOCAB)
    canvases = [torch.tensor([1, 2]), torch.tensor([1, MASK, MASK])]
    positions = [torch.zeros(0, dtype=torch.int64), torch.tensor([1, 2])]
    params = [make_params(repetition_penalty=2.0), make_params(logit_bias={0: 50.0})]
    got = process_logits(logits, [0, 2], params, canvases, [2, 1], positions, MASK, [EOS])
    assert got.argmax(dim=-1).tolist() == [0, 0]


@pytest.mark.parametrize("penalty", [1e-300, 1e-40, 1e308])
def test_extreme_repetition_penalty_never_gives_inf_or_nan(penalty: float) -> None:
    row = [3.0, -3.0, 1.0] + [0.0] * (VOCAB - 3)
    # tokens 0 and 1 are in the prompt: divided (or multiplied) by a float32 0 or inf
    got = run_one([row], make_params(repetition_penalty=penalty), [0, 1, MASK], 2, [2])
    assert not torch.isnan(got).any() and not torch.isposinf(got).any()
    assert got[0, 2] == 1.0  # an unseen token is untouched


def test_non_contiguous_logits_are_processed_like_contiguous_ones() -> None:
    logits = torch.randn(VOCAB, 3).t()  # [3, VOCAB], not contiguous
    assert not logits.is_contiguous()
    params = make_params(repetition_penalty=1.5, logit_bias={4: 2.0}, frequency_penalty=0.3)
    args = (
        [3],
        [params],
        [torch.tensor([1, 2, MASK, MASK, MASK])],
        [2],
        [torch.tensor([2, 3, 4])],
        MASK,
        [EOS],
    )
    want = process_logits(logits.contiguous(), *args)
    assert torch.equal(process_logits(logits, *args), want)
    assert torch.equal(process_logits(logits.clone(), *args, in_place=True), want)
