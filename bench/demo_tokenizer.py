"""Byte-level BPE tokenizers for the demo models, trained on the task corpus, in the real layouts.

Both styles use Qwen2's exact pre-tokenizer (NFC, Qwen2's split regex, ByteLevel without regex), so
transformers 5 — which rebuilds the tokenizer of a `qwen2` checkpoint from its own class — produces
the same ids as `tokenizers.Tokenizer.from_file`. Space is `Ġ`, newline `Ċ`; digits are always single
tokens. Special tokens are numbered after the BPE vocabulary, as in the real checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from bench.tasks import tokenizer_corpus

PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
BPE_VOCAB_SIZE = 320
"""256 byte symbols plus merges learned from the task prompts and chat-template words."""

LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
"""Qwen's ChatML without the default system prompt (it would double the demo prompts' length)."""


@dataclass(frozen=True, slots=True)
class TokenizerStyle:
    name: str
    special_tokens: tuple[str, ...]
    roles: dict[str, str]
    """bos_token / eos_token / pad_token / mask_token -> token text."""
    end_of_answer: str
    """Token closing an assistant turn; the canvas after it is padded with roles['pad_token']."""
    tokenizer_class: str
    chat_template: str
    template_words: str


LLADA_STYLE = TokenizerStyle(
    name="llada",
    special_tokens=(
        "<|startoftext|>",
        "<|endoftext|>",
        "<|mdm_mask|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ),
    roles={
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "mask_token": "<|mdm_mask|>",
    },
    end_of_answer="<|eot_id|>",
    tokenizer_class="PreTrainedTokenizerFast",
    chat_template=LLADA_CHAT_TEMPLATE,
    template_words="user\n\nassistant\n\nsystem\n\n",
)
QWEN_STYLE = TokenizerStyle(
    name="qwen",
    special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"),
    roles={
        "bos_token": "<|beginoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "mask_token": "<|mask|>",
    },
    end_of_answer="<|im_end|>",
    tokenizer_class="Qwen2Tokenizer",
    chat_template=CHATML_TEMPLATE,
    template_words="user\nassistant\nsystem\n",
)


def train_tokenizer(style: TokenizerStyle) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [*tokenizer_corpus(), *[style.template_words] * 200]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in style.special_tokens]
    )
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, style: TokenizerStyle, path: Path, model_max_length: int) -> None:
    """tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
    tokenizer.save(str(path / "tokenizer.json"))
    added = {
        str(token_id): {
            "content": token.content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token_id, token in sorted(tokenizer.get_added_tokens_decoder().items())
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in style.special_tokens if t not in style.roles.values()],
        "chat_template": style.chat_template,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "tokenizer_class": style.tokenizer_class,
        **style.roles,
    }
    _write_json(path / "tokenizer_config.json", config)
    _write_json(path / "special_tokens_map.json", dict(style.roles))


def assert_tokenizers_agree(path: Path, texts: list[str]) -> None:
    """transformers may rebuild the tokenizer of a known model type; it must give the file's ids."""
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(path))
    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    for text in texts:
        auto_ids = auto.encode(text, add_special_tokens=False)
        raw_ids = raw.encode(text, add_special_tokens=False).ids
        if auto_ids != raw_ids:
            raise AssertionError(f"{path}: AutoTokenizer {auto_ids} != tokenizers {raw_ids} for {text!r}")
        if auto.decode(auto_ids) != text:
            raise AssertionError(f"{path}: decode(encode({text!r})) = {auto.decode(auto_ids)!r}")


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
