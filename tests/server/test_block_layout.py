"""The block-causal canvas layout (sequence.plan_blocks with align_to_prompt_len).

Rule matched: JetAstra/SDAR generate.py `block_diffusion_generate`, inclusionAI LLaDA2 modeling `generate`
and NVlabs Fast-dLLM v2 `generate` (see reference/block-diffusion.md) cut the canvas into blocks at
absolute multiples of B from position 0. The prompt's last partial block is completed first (the first
generated block is B - P % B long), every later block starts at a multiple of B, and the canvas ends at
ceil((P + max_tokens) / B) * B. Bidirectional layouts (LLaDA, Dream) keep LLaDA's generate layout.
"""

import pytest
from vdiff.engine.sequence import plan_blocks


def _absolute(prompt_len: int, max_tokens: int, block: int, room: int = 1000) -> list[tuple[int, int]]:
    blocks = plan_blocks(max_tokens, block, None, room, prompt_len)
    return [(prompt_len + b.start, prompt_len + b.end) for b in blocks]


@pytest.mark.parametrize(
    ("prompt_len", "max_tokens", "block", "expected"),
    [
        (8, 8, 4, [(8, 12), (12, 16)]),  # aligned prompt: whole blocks
        (5, 8, 4, [(5, 8), (8, 12), (12, 16)]),  # partial first block, the canvas ends at 16
        (7, 9, 4, [(7, 8), (8, 12), (12, 16)]),
        (5, 2, 4, [(5, 8)]),  # max_tokens < B: the prompt's block is still completed
        (3, 1, 4, [(3, 4)]),
        (33, 32, 32, [(33, 64), (64, 96)]),
    ],
)
def test_blocks_start_at_absolute_multiples(prompt_len, max_tokens, block, expected) -> None:
    assert _absolute(prompt_len, max_tokens, block) == expected
    assert all(end % block == 0 for _, end in expected)


def test_aligned_canvas_is_capped_by_the_context() -> None:
    """Room for 6 generated positions (max_model_len - P): the last block is cut, as before."""
    assert _absolute(5, 6, 4, room=6) == [(5, 8), (8, 11)]


def test_steps_are_spread_over_the_aligned_blocks() -> None:
    blocks = plan_blocks(8, 4, 5, 1000, 5)
    assert [b.num_steps for b in blocks] == [2, 2, 1]


@pytest.mark.parametrize("prompt_len", [None, 0])
def test_bidirectional_layout_is_unchanged(prompt_len) -> None:
    """Without alignment (LLaDA/Dream) blocks count from the prompt's end: LLaDA's generate layout."""
    blocks = plan_blocks(8, 4, None, 1000, prompt_len)
    assert [(b.start, b.end) for b in blocks] == [(0, 4), (4, 8)]
    assert [(b.start, b.end) for b in plan_blocks(6, 4, None, 1000)] == [(0, 4), (4, 8)]
