"""Grammar backends: per-token mask cost of llguidance and xgrammar on the CPU (why vdiff uses llguidance).

For each tokenizer (the demo models' own, and a ~150k-token Qwen2.5-style byte-level BPE built here from
local text, no hub access), a JSON-schema grammar is compiled and a valid document is replayed token by
token: per token, the backend fills the allowed-token bitmask and consumes the token. Reported: the mean
and median mask time per token, the compile time, and the xgrammar / llguidance ratio of one run.

    .venv/bin/python -m bench.structured_backends [--out bench/results/structured_backends.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.demo_tokenizer import PRETOKENIZE_REGEX

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "tags", "address"],
}
DOCUMENT = json.dumps(
    {
        "name": "Ada Lovelace of the analytical engine",
        "age": 36,
        "tags": ["mathematics", "poetry", "computing", "notes on the engine"],
        "address": {"city": "London", "zip": "12345"},
    }
)
LARGE_VOCAB = 151_643
"""Qwen2.5's BPE vocabulary size (without its added tokens)."""


def build_large_tokenizer(size: int = LARGE_VOCAB):
    """A byte-level BPE with Qwen2's pre-tokenizer and `size` tokens: the 256 byte symbols, then every
    distinct word (with and without its leading space) of this Python's standard library, each built by
    left-to-right merges, until the vocabulary is full. Same trie shape and token-length spread as a
    trained vocabulary (short merges first), built in seconds without a corpus download."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    merges: list[tuple[str, str]] = []
    splitter = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), "isolated"), byte_level]
    )
    stdlib = Path(os.__file__).parent
    words: dict[str, None] = {}
    for path in sorted(stdlib.rglob("*.py")):
        for piece, _ in splitter.pre_tokenize_str(path.read_text(errors="ignore")):
            if 1 < len(piece) <= 16:
                words[piece] = None
        if len(words) > size:
            break
    for word in words:
        if len(vocab) >= size:
            break
        prefix = word[0]
        for char in word[1:]:
            merged = prefix + char
            if merged not in vocab:
                if len(vocab) >= size:
                    break
                vocab[merged] = len(vocab)
                merges.append((prefix, char))
            prefix = merged
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = splitter
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def demo_tokenizer(name: str):
    from transformers import AutoTokenizer
    from vdiff.demo import shipped_demo_path

    return AutoTokenizer.from_pretrained(shipped_demo_path(name))


def bench_llguidance(hf_tokenizer, tokens: list[int], repeats: int) -> dict[str, float]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    vocab = len(hf_tokenizer)
    ll_tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab)
    started = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA)
    matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
    compile_s = time.perf_counter() - started
    bitmask = llguidance.torch.allocate_token_bitmask(1, vocab)
    times = []
    for _ in range(repeats):
        matcher.reset()
        for token in tokens:
            started = time.perf_counter()
            llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
            times.append(time.perf_counter() - started)
            assert matcher.consume_token(token), matcher.get_error()
    return _summary(times, compile_s)


def bench_xgrammar(hf_tokenizer, tokens: list[int], repeats: int) -> dict[str, float]:
    import xgrammar

    vocab = len(hf_tokenizer)
    info = xgrammar.TokenizerInfo.from_huggingface(hf_tokenizer, vocab_size=vocab)
    compiler = xgrammar.GrammarCompiler(info, max_threads=1)
    started = time.perf_counter()
    compiled = compiler.compile_json_schema(json.dumps(SCHEMA))
    matcher = xgrammar.GrammarMatcher(compiled)
    compile_s = time.perf_counter() - started
    bitmask = xgrammar.allocate_token_bitmask(1, vocab)
    times = []
    for _ in range(repeats):
        matcher.reset()
        for token in tokens:
            started = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask, 0)
            times.append(time.perf_counter() - started)
            assert matcher.accept_token(token)
    return _summary(times, compile_s)


def _summary(times: list[float], compile_s: float) -> dict[str, float]:
    return {
        "mask_mean_us": statistics.fmean(times) * 1e6,
        "mask_median_us": statistics.median(times) * 1e6,
        "mask_p99_us": sorted(times)[int(0.99 * (len(times) - 1))] * 1e6,
        "compile_ms": compile_s * 1e3,
        "num_masks": len(times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/structured_backends.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tokenizers = {
        "dream-demo": demo_tokenizer("dream-demo"),
        "llada-demo": demo_tokenizer("llada-demo"),
        "qwen2.5-style-151k": build_large_tokenizer(),
    }
    report: dict[str, dict] = {}
    for name, hf_tokenizer in tokenizers.items():
        tokens = hf_tokenizer.encode(DOCUMENT, add_special_tokens=False)
        rows = {
            "llguidance": bench_llguidance(hf_tokenizer, tokens, args.repeats),
            "xgrammar": bench_xgrammar(hf_tokenizer, tokens, args.repeats),
        }
        ratio = rows["xgrammar"]["mask_mean_us"] / rows["llguidance"]["mask_mean_us"]
        report[name] = {
            "vocab": len(hf_tokenizer),
            "doc_tokens": len(tokens),
            **rows,
            "xgrammar_over_llguidance": ratio,
        }
        llg, xgr = rows["llguidance"], rows["xgrammar"]
        print(
            f"{name:20s} vocab {len(hf_tokenizer):7d}  llguidance {llg['mask_mean_us']:8.1f} us/token "
            f"(compile {llg['compile_ms']:.1f} ms)  xgrammar {xgr['mask_mean_us']:8.1f} "
            f"us/token (compile {xgr['compile_ms']:.1f} ms)  ratio xgr/llg {ratio:.2f}x"
        )
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
