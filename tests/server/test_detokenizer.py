"""Incremental detokenization must give exactly the text of a full decode, whatever the chunking."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer
from vdiff.demo import demo_model_path
from vdiff.engine.output_processor import OutputProcessor, supports_incremental_decoding

TEXTS = [
    "Sort 3142. The answer is 1234.\nThen reverse it: 4321!",
    "naïve café — déjà vu, 東京 and 🙂🚀 emoji spanning several byte-level tokens",
    "  leading spaces,\ttabs\n\nand blank lines   ",
]


@pytest.mark.parametrize("model", ["llada-demo", "dream-demo"])
def test_incremental_text_equals_a_full_decode_for_any_chunking(model: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path(model))
    assert supports_incremental_decoding(tokenizer)

    def decode(ids: list[int], skip_special_tokens: bool = True) -> str:
        return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    processor = OutputProcessor(decode, eos_token_ids=[], incremental=True)
    rng = random.Random(0)
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        for _ in range(20):
            seq = SimpleNamespace(
                output_token_ids=[], detokenizer_state=None, params=SimpleNamespace(skip_special_tokens=True)
            )
            position = 0
            while position < len(ids):
                position = min(len(ids), position + rng.randint(1, 4))
                seq.output_token_ids = ids[:position]
                assert processor._decoded_text(seq) == decode(ids[:position])
        assert decode(ids) == text


def test_wordpiece_style_cleanup_keeps_the_full_decode() -> None:
    tokenizer = SimpleNamespace(clean_up_tokenization_spaces=True)
    assert not supports_incremental_decoding(tokenizer)
