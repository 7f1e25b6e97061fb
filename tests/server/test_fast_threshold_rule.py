"""The vectorized Fast-dLLM commit rules (threshold and factor) against a plain per-row oracle."""

from __future__ import annotations

import torch
from vdiff.engine.decoding.threshold import select_parallel


def _oracle(
    confidence: list[float], candidates: list[bool], threshold: float, factor: float | None
) -> set[int]:
    pool = [i for i, ok in enumerate(candidates) if ok]
    if not pool:
        return set()
    ranked = sorted(pool, key=lambda i: -confidence[i])
    chosen = {ranked[0]}
    if factor is None:
        if threshold < 1:
            chosen |= {i for i in pool if confidence[i] >= threshold}
        return chosen
    for n, i in enumerate(ranked, start=1):
        if n > 1 and not (n + 1) * (1 - confidence[i]) < factor:
            break
        chosen.add(i)
    return chosen


def _selected(row: torch.Tensor) -> set[int]:
    return set(row.nonzero().flatten().tolist())


def test_threshold_commits_confident_positions_and_always_the_best() -> None:
    confidence = torch.tensor([[0.95, 0.2, 0.91, 0.99], [0.3, 0.4, 0.1, 0.2], [0.9, 0.9, 0.9, 0.9]])
    candidates = torch.tensor([[True, True, True, False], [True, True, True, True], [False] * 4])
    commit = select_parallel(confidence, candidates, torch.tensor([0.9, 0.9, 0.9]))
    assert _selected(commit[0]) == {0, 2}  # position 3 is already committed
    assert _selected(commit[1]) == {1}  # nothing above τ: the argmax alone
    assert _selected(commit[2]) == set()  # a row with no masks commits nothing


def test_threshold_one_commits_exactly_one_even_at_probability_one() -> None:
    confidence = torch.tensor([[1.0, 1.0, 0.5]])
    commit = select_parallel(confidence, torch.ones(1, 3, dtype=torch.bool), torch.tensor([1.0]))
    assert commit.sum().item() == 1


def test_factor_rule_takes_the_leading_run_of_sorted_confidences() -> None:
    # sorted: 0.99 (i=1), 0.8 (i=2: 3*0.2=0.6 < 1), 0.7 (i=3: 4*0.3=1.2 >= 1 -> stop), 0.69
    confidence = torch.tensor([[0.7, 0.99, 0.8, 0.69]])
    commit = select_parallel(
        confidence, torch.ones(1, 4, dtype=torch.bool), torch.tensor([0.9]), torch.tensor([1.0])
    )
    assert _selected(commit[0]) == {1, 2}


def test_rules_match_the_oracle_on_random_batches_with_mixed_rows() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        rows, length = 6, 12
        confidence = torch.rand(rows, length, generator=generator) ** 0.3
        candidates = torch.rand(rows, length, generator=generator) < 0.7
        threshold = torch.rand(rows, generator=generator) * 0.6 + 0.4
        factor = torch.where(torch.rand(rows, generator=generator) < 0.5, 0.0, 2.0)
        commit = select_parallel(confidence, candidates, threshold, factor)
        for row in range(rows):
            expected = _oracle(
                confidence[row].tolist(),
                candidates[row].tolist(),
                threshold[row].item(),
                factor[row].item() if factor[row] > 0 else None,
            )
            assert _selected(commit[row]) == expected
