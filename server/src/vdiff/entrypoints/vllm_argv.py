"""vLLM's command-line spellings, rewritten to the canonical flags before argparse sees them.

The rules of vLLM's FlexibleArgumentParser.parse_args (vllm/utils/argparse_utils.py):
- a flag name may use underscores for dashes (`--max_num_seqs 4` = `--max-num-seqs 4`); only the name is
  rewritten, from `--` to the first `.` or `=`, never a value;
- a JSON-valued flag may be given key by key: `--structured-outputs-config.backend guidance` (or
  `...backend=guidance`), nested keys with more dots (`--x.a.b 1` = `--x '{"a": {"b": 1}}'`), and `key+`
  appends comma-separated items to a list (`--x.k+ a,b`). A value is read as JSON, else as a
  human-readable integer (`1k` = 1000, `1K` = 1024), else kept as a string. The keys of one flag merge
  into one object, passed after the other arguments (so it wins over a whole-JSON form of the same flag).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

_NAME = re.compile(r"(?<=--)[^.]*")
_HUMAN_INT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """`argv` with vLLM's underscore names dashed and its dotted JSON keys folded into one JSON value each."""
    dashed = [_dash_name(arg) for arg in argv]
    objects: dict[str, dict[str, Any]] = {}
    out: list[str] = []
    index = 0
    while index < len(dashed):
        arg = dashed[index]
        name, eq, inline = arg.partition("=")
        if not (arg.startswith("--") and "." in name):
            out.append(arg)
            index += 1
            continue
        if eq:
            value_text = inline
            index += 1
        elif index + 1 < len(dashed):
            value_text = dashed[index + 1]
            index += 2
        else:
            out.append(arg)  # argparse reports the missing value (or the unknown flag)
            break
        flag, *keys = name.split(".")
        value: Any
        if keys[-1].endswith("+"):
            keys[-1] = keys[-1][:-1]
            value = value_text.split(",")
        else:
            value = _parse_value(value_text)
        _merge(objects.setdefault(flag, {}), _nest(keys, value))
    for flag, value in objects.items():
        out += [flag, json.dumps(value)]
    return out


def _dash_name(arg: str) -> str:
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg.partition("=")
    return _NAME.sub(lambda match: match.group(0).replace("_", "-"), name, count=1) + eq + value


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    match = _HUMAN_INT.fullmatch(text.strip())
    if match:
        number, suffix = match.groups()
        if suffix in _DECIMAL:
            return int(float(number) * _DECIMAL[suffix])
        if "." not in number:
            return int(number) * _BINARY[suffix]
    return text


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(keys[1:]):
        value = {key: value}
    return {keys[0]: value}


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] += value
        else:
            into[key] = value
