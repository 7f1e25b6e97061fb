"""APD's acceptance rule: shared-Gumbel coupling, greedy at T=0, ragged rows, first token always kept."""

from __future__ import annotations

import torch
from vdiff.engine.decoding.apd import coupled_sample, gumbel_noise, mixture_log_probs, num_accepted


def _random_log_probs(shape: tuple[int, ...], seed: int, sharpness: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * sharpness).log_softmax(dim=-1)


def _noise(rows: int, positions: int, vocab: int, seed: int) -> torch.Tensor:
    return torch.stack(
        [gumbel_noise(positions, vocab, torch.Generator().manual_seed(seed + r), "cpu") for r in range(rows)]
    )


def test_identical_draft_and_target_distributions_accept_everything_at_any_temperature() -> None:
    rows, positions, vocab = 4, 24, 50
    dllm = _random_log_probs((rows, positions, vocab), seed=1, sharpness=1.0)
    gumbel = _noise(rows, positions, vocab, seed=10)
    temperature = torch.tensor([0.0, 0.5, 1.0, 2.0])
    weight = torch.tensor([0.0, 0.3, 0.7, 1.0])
    draft = coupled_sample(dllm, temperature, gumbel)
    target = coupled_sample(mixture_log_probs(dllm, dllm.clone(), weight), temperature, gumbel)
    lengths = torch.full((rows,), positions)
    assert num_accepted(draft, target, lengths).tolist() == [positions] * rows


def test_independent_noise_would_reject_what_the_coupling_accepts() -> None:
    dllm = _random_log_probs((1, 24, 50), seed=2, sharpness=0.5)
    temperature = torch.tensor([1.0])
    draft = coupled_sample(dllm, temperature, _noise(1, 24, 50, seed=3))
    target = coupled_sample(dllm, temperature, _noise(1, 24, 50, seed=4))
    assert num_accepted(draft, target, torch.tensor([24])).item() < 24


def test_mixture_weight_one_is_the_draft_itself_and_zero_is_the_ar_model() -> None:
    dllm = _random_log_probs((2, 8, 30), seed=5)
    ar = _random_log_probs((2, 8, 30), seed=6)
    greedy = torch.zeros(2)
    draft = coupled_sample(dllm, greedy, None)
    assert torch.equal(coupled_sample(mixture_log_probs(dllm, ar, torch.ones(2)), greedy, None), draft)
    assert torch.equal(
        coupled_sample(mixture_log_probs(dllm, ar, torch.zeros(2)), greedy, None), ar.argmax(dim=-1)
    )


def test_greedy_ignores_the_noise() -> None:
    dllm = _random_log_probs((1, 6, 30), seed=7)
    noisy = coupled_sample(dllm, torch.zeros(1), _noise(1, 6, 30, seed=8))
    assert torch.equal(noisy, dllm.argmax(dim=-1))


def test_accepts_longest_agreeing_prefix_first_token_always_and_respects_ragged_lengths() -> None:
    draft = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8], [5, 6, 7, 8], [1, 2, 3, 4]])
    target = torch.tensor([[5, 6, 0, 8], [0, 6, 7, 8], [5, 6, 7, 8], [1, 2, 3, 4]])
    lengths = torch.tensor([4, 4, 4, 2])
    assert num_accepted(draft, target, lengths).tolist() == [2, 4, 4, 2]
    # the first token counts even when the target disagrees with it
    assert num_accepted(torch.tensor([[9, 1]]), torch.tensor([[3, 1]]), torch.tensor([2])).item() == 2
    assert num_accepted(torch.tensor([[9, 1]]), torch.tensor([[3, 2]]), torch.tensor([2])).item() == 1


def test_top_k_one_makes_sampling_greedy() -> None:
    dllm = _random_log_probs((2, 5, 30), seed=9)
    sampled = coupled_sample(
        dllm, torch.ones(2), _noise(2, 5, 30, seed=11), top_k=torch.tensor([1, 1]), top_p=torch.ones(2)
    )
    assert torch.equal(sampled, dllm.argmax(dim=-1))


def test_noise_depends_only_on_the_sequence_generator() -> None:
    first = gumbel_noise(3, 10, torch.Generator().manual_seed(42), "cpu")
    second = gumbel_noise(3, 10, torch.Generator().manual_seed(42), "cpu")
    assert torch.equal(first, second) and torch.isfinite(first).all()
