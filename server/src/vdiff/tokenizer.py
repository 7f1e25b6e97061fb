"""The checkpoint's Hugging Face tokenizer plus what the engine needs: mask, end-of-generation and pad ids."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdiff.errors import VdiffValidationError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vdiff.models.registry import FamilySpec


@dataclass(slots=True)
class TokenizerInfo:
    tokenizer: PreTrainedTokenizerBase
    mask_token_id: int | None
    """None only for causal (AR verifier) families."""
    eos_token_ids: list[int]
    """Every token that ends an answer for this family (e.g. LLaDA: <|eot_id|>, <|endoftext|>)."""
    pad_token_id: int
    bos_token_id: int | None = None
    chat_template: str | None = field(default=None, repr=False)
    """Overrides the tokenizer's own template (--chat-template)."""
    max_token_bytes: int = 0
    """An upper bound on the UTF-8 bytes one token covers (a text of B bytes has at least
    B / max_token_bytes tokens): 4 per character of the longest vocabulary entry; 0 = unknown."""

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        **template_kwargs: Any,
    ) -> str:
        """The prompt text; a missing or failing template is the client's/operator's error (400)."""
        template = chat_template or self.chat_template or self.tokenizer.chat_template
        if not template:
            raise VdiffValidationError(
                "This model has no chat template; pass --chat-template or use /v1/completions", "messages"
            )
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                chat_template=template,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
                **template_kwargs,
            )
        except Exception as error:  # jinja2 errors, including raise_exception() in templates
            raise VdiffValidationError(f"Could not apply the chat template: {error}", "messages") from error

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        **template_kwargs: Any,
    ) -> list[int]:
        """Prompt ids; special tokens come from the template itself (no extra BOS)."""
        text = self.render_chat(messages, add_generation_prompt, chat_template, **template_kwargs)
        return self.encode(text, add_special_tokens=False)


@contextmanager
def _quiet_config_probe() -> Iterator[None]:
    """AutoTokenizer reads config.json and warns that `llada`/`Dream` are unknown model types (expected)."""
    probe_logger = logging.getLogger("transformers.configuration_utils")
    previous = probe_logger.level
    probe_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        probe_logger.setLevel(previous)


def read_chat_template(value: str) -> str:
    """--chat-template: a file path or a literal Jinja template."""
    path = Path(value).expanduser()
    try:
        if path.is_file():
            return path.read_text()
    except OSError:  # a long literal template is not a valid path
        pass
    if "{{" in value or "{%" in value:
        return value
    raise VdiffValidationError(
        f"--chat-template {value!r} is neither an existing file nor a Jinja template", "--chat-template"
    )


def _config_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str | None) -> int | None:
    if not token:
        return None
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return int(token_id)


def load_tokenizer(
    model_dir: str | Path,
    family: FamilySpec,
    chat_template: str | None = None,
    hf_config: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> TokenizerInfo:
    """Load `model_dir`'s tokenizer and resolve the family's special token ids (validated)."""
    from transformers import AutoTokenizer

    hf_config = hf_config or {}
    try:
        with _quiet_config_probe():
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    except Exception as error:
        raise VdiffValidationError(
            f"Cannot load the tokenizer in {model_dir}: {error}", "tokenizer"
        ) from error

    mask_token_id = _token_id(tokenizer, family.mask_token)
    if mask_token_id is None:
        mask_token_id = hf_config.get("mask_token_id")
    if mask_token_id is None and getattr(tokenizer, "mask_token", None):
        mask_token_id = tokenizer.mask_token_id
    if mask_token_id is None and family.is_diffusion:
        raise VdiffValidationError(
            f"No mask token ({family.mask_token or 'mask_token_id'}) in the tokenizer or config.json",
            "model",
        )

    eos_token_ids: list[int] = []
    candidates = [_token_id(tokenizer, token) for token in family.end_tokens]
    candidates += [tokenizer.eos_token_id, *_config_ids(hf_config.get("eos_token_id"))]
    for token_id in candidates:
        if token_id is not None and token_id not in eos_token_ids:
            eos_token_ids.append(int(token_id))
    if not eos_token_ids:
        raise VdiffValidationError(f"No end-of-generation token found for {model_dir}", "model")

    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = hf_config.get("pad_token_id", eos_token_ids[-1])
    if mask_token_id is not None and mask_token_id == pad_token_id:
        raise VdiffValidationError(
            f"The mask token id ({mask_token_id}) equals the pad token id; the special tokens are broken",
            "model",
        )
    if mask_token_id is not None and mask_token_id in eos_token_ids:
        raise VdiffValidationError(
            f"The mask token id ({mask_token_id}) is also an end-of-generation id", "model"
        )

    return TokenizerInfo(
        tokenizer=tokenizer,
        mask_token_id=None if mask_token_id is None else int(mask_token_id),
        eos_token_ids=eos_token_ids,
        pad_token_id=int(pad_token_id),
        bos_token_id=tokenizer.bos_token_id,
        chat_template=read_chat_template(chat_template) if chat_template else None,
        max_token_bytes=4 * max((len(token) for token in tokenizer.get_vocab()), default=1),
    )
