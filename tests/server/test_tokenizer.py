"""TokenizerInfo: the family's special ids, chat templates and --chat-template handling."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from checkpoint_factory import make_llada_checkpoint
from vdiff.errors import VdiffValidationError
from vdiff.models.registry import DREAM, LLADA, QWEN2_AR
from vdiff.tokenizer import TokenizerInfo, load_tokenizer

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def token(info: TokenizerInfo, text: str) -> int:
    return info.tokenizer.convert_tokens_to_ids(text)


def test_llada_special_ids_and_chat_template(llada_checkpoint: Path) -> None:
    hf_config = config(llada_checkpoint)
    info = load_tokenizer(llada_checkpoint, LLADA, hf_config=hf_config)
    assert info.mask_token_id == hf_config["mask_token_id"] == token(info, "<|mdm_mask|>")
    assert info.eos_token_ids == [token(info, "<|eot_id|>"), token(info, "<|endoftext|>")]
    assert info.pad_token_id == hf_config["pad_token_id"] == token(info, "<|endoftext|>")
    assert info.bos_token_id == token(info, "<|startoftext|>")
    ids = info.apply_chat_template(MESSAGES)
    assert info.decode(ids, skip_special_tokens=False) == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert ids[0] == info.bos_token_id and ids.count(info.bos_token_id) == 1
    assert info.decode(info.encode("a b\n c")) == "a b\n c"
    assert info.decode([*info.encode("ok"), *info.eos_token_ids]) == "ok"


def test_dream_special_ids_and_default_system_prompt(dream_checkpoint: Path) -> None:
    hf_config = config(dream_checkpoint)
    info = load_tokenizer(dream_checkpoint, DREAM, hf_config=hf_config)
    assert info.mask_token_id == hf_config["mask_token_id"] == token(info, "<|mask|>")
    assert info.eos_token_ids == [token(info, "<|im_end|>"), token(info, "<|endoftext|>")]
    assert info.pad_token_id == token(info, "<|endoftext|>")
    assert info.bos_token_id == token(info, "<|beginoftext|>")
    text = info.decode(info.apply_chat_template(MESSAGES), skip_special_tokens=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    assert info.render_chat(with_system).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert not info.render_chat(MESSAGES, add_generation_prompt=False).endswith("assistant\n")


def test_ar_verifier_shares_dreams_ids(dream_checkpoint: Path, qwen2_ar_checkpoint: Path) -> None:
    dream = load_tokenizer(dream_checkpoint, DREAM, hf_config=config(dream_checkpoint))
    verifier = load_tokenizer(qwen2_ar_checkpoint, QWEN2_AR, hf_config=config(qwen2_ar_checkpoint))
    assert verifier.mask_token_id is None
    assert verifier.eos_token_ids == dream.eos_token_ids
    sample = "Hello there,\n  general Kenobi!"
    assert verifier.encode(sample) == dream.encode(sample)
    assert verifier.apply_chat_template(MESSAGES) == dream.apply_chat_template(MESSAGES)


def test_chat_template_override_from_file_or_literal(tmp_path: Path, llada_checkpoint: Path) -> None:
    literal = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    info = load_tokenizer(llada_checkpoint, LLADA, chat_template=literal)
    assert info.render_chat(MESSAGES) == "[user] What is 2+2?\n"
    template_file = tmp_path / "template.jinja"
    template_file.write_text("Q: {{ messages[-1]['content'] }}\nA:")
    info = load_tokenizer(llada_checkpoint, LLADA, chat_template=str(template_file))
    assert info.decode(info.apply_chat_template(MESSAGES)) == "Q: What is 2+2?\nA:"
    with pytest.raises(VdiffValidationError) as error:
        load_tokenizer(llada_checkpoint, LLADA, chat_template=str(tmp_path / "missing.jinja"))
    assert error.value.param == "--chat-template"


def test_template_errors_are_validation_errors(tmp_path: Path) -> None:
    path = make_llada_checkpoint(tmp_path)
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    del tokenizer_config["chat_template"]
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    info = load_tokenizer(path, LLADA, hf_config=config(path))
    with pytest.raises(VdiffValidationError, match="no chat template"):
        info.apply_chat_template(MESSAGES)
    strict = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    with pytest.raises(VdiffValidationError, match="system first"):
        info.apply_chat_template(MESSAGES, chat_template=strict)


def test_mask_must_differ_from_pad_and_exist(tmp_path: Path, qwen2_ar_checkpoint: Path) -> None:
    path = make_llada_checkpoint(tmp_path)
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config | {"pad_token": "<|mdm_mask|>"}))
    with pytest.raises(VdiffValidationError, match="equals the pad token id"):
        load_tokenizer(path, LLADA, hf_config=config(path))
    no_mask_family = dataclasses.replace(DREAM, mask_token="<|absent|>")
    with pytest.raises(VdiffValidationError, match="No mask token"):
        load_tokenizer(qwen2_ar_checkpoint, no_mask_family, hf_config=config(qwen2_ar_checkpoint))
    with_config_id = load_tokenizer(qwen2_ar_checkpoint, no_mask_family, hf_config={"mask_token_id": 268})
    assert with_config_id.mask_token_id == 268
