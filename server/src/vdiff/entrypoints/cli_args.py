"""`vdiff serve` flags generated from EngineConfig, FrontendArgs and VllmCompatArgs, with VDIFF_* env
(and vLLM's VLLM_* equivalents) and --config YAML.

Precedence: command line > VDIFF_* environment > VLLM_* environment > --config YAML > dataclass default.
Field docstrings are the --help text, so the flags can't drift from the config they fill.
"""

from __future__ import annotations

import argparse
import ast
import copy
import inspect
import json
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from vdiff.config import EngineConfig
from vdiff.entrypoints.frontend_args import FrontendArgs, VllmCompatArgs
from vdiff.entrypoints.vllm_argv import normalize_argv
from vdiff.errors import VdiffValidationError
from vdiff.knobs import SERVER_KNOBS

ENV_PREFIX = "VDIFF_"
FLAG_CLASSES = (EngineConfig, FrontendArgs, VllmCompatArgs)
SHORT_FLAGS = {"quantization": ("-q",), "tensor_parallel_size": ("-tp",), "pipeline_parallel_size": ("-pp",)}
VLLM_ENV = {
    "api_key": "VLLM_API_KEY",
    "log_stats_interval": "VLLM_LOG_STATS_INTERVAL",
    "max_prompts_per_request": "VLLM_MAX_COMPLETION_PROMPTS",
}
"""vLLM environment variables (vllm/envs.py) with the same meaning as a vdiff flag; VDIFF_* wins over them.
VLLM_PORT and VLLM_HOST_IP are not mapped: in vLLM they are the distributed backend's, not the API's."""
JSON_LIST_FIELDS = ("allowed_origins", "allowed_methods", "allowed_headers")
"""Taken as one JSON list value, as vLLM's `--allowed-origins '["*"]'` (a comma-separated list works too)."""
APPEND_FIELDS = ("middleware",)
"""Repeated flag, one value each (vLLM's --middleware)."""
OPTIONAL_VALUE_FIELDS = {"hf_token": "true"}
"""Flags that may be given bare (value on the right), as vLLM's `--hf-token`."""
FLAG_NAMES = {"served_model_names": "served-model-name"}
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}

FLAG_GROUPS = {
    "Model": ("model", "tokenizer", "revision", "download_dir", "hf_token", "trust_remote_code",
              "served_model_names", "chat_template", "generation_config", "override_generation_config"),
    "Capacity": ("dtype", "device", "quantization", "tensor_parallel_size", "max_model_len", "max_num_seqs",
                 "max_waiting_requests", "seed", "enforce_eager", "max_logprobs"),
    "Diffusion decoding defaults": ("diffusion_steps", "block_length", "remasking", "dream_alg"),
    "Fast decoding": ("decoding", "threshold", "factor", "kv_cache", "kv_cache_vicinity", "draft_model",
                      "apd_mixture_weight", "apd_kv_window", "apd_max_lookahead"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag, its env variable and YAML key, derived from a dataclass field."""

    field_name: str
    owner: type
    kind: str  # bool | int | float | str | strs | list | dict
    nullable: bool
    default: Any
    help: str

    @property
    def long_name(self) -> str:
        return "--" + FLAG_NAMES.get(self.field_name, self.field_name.replace("_", "-"))

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.long_name.lstrip("-").replace("-", "_").upper()

    @property
    def vllm_env_name(self) -> str | None:
        return VLLM_ENV.get(self.field_name)

    @property
    def yaml_keys(self) -> tuple[str, ...]:
        bare = self.long_name.lstrip("-")
        return tuple(dict.fromkeys((bare, bare.replace("-", "_"), self.field_name)))

    def convert(self, value: Any, source: str) -> Any:
        """Turn a YAML/env value into the field's type; the error names where the value came from."""
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            if self.nullable:
                return None
            if self.kind == "list":
                return []
            if self.kind == "dict":
                return {}
            raise VdiffValidationError(f"{source} needs a value", self.long_name)
        try:
            if self.kind == "bool":
                return _to_bool(value)
            if self.kind == "list":
                return _to_list(value)
            if self.kind == "strs":  # one value as given (an env variable is one key), a YAML list as list
                return [str(item) for item in value] if isinstance(value, list) else str(value)
            if self.kind == "dict":
                return _to_dict(value)
            if self.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                return int(value)
            if self.kind == "float":
                if isinstance(value, bool):
                    raise ValueError(value)
                return float(value)
            return str(value)
        except (TypeError, ValueError):
            raise VdiffValidationError(
                f"{source}: {value!r} is not a valid {self.kind} for {self.long_name}", self.long_name
            ) from None


def _to_list(value: Any) -> list[str]:
    """A YAML list, a JSON list ('["*"]') or a comma/space-separated string."""
    if isinstance(value, str) and value.strip().startswith("["):
        value = json.loads(value)
        if not isinstance(value, list):
            raise ValueError(value)
    items = value if isinstance(value, list) else str(value).replace(",", " ").split()
    return [str(item) for item in items]


def _to_dict(value: Any) -> dict[str, Any]:
    """A YAML mapping or a JSON object string."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(value)
    return {str(key): item for key, item in value.items()}


def _argparse_type(convert: Any, what: str) -> Any:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:  # json.JSONDecodeError is a ValueError
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    return parse


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(value)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each annotated field of a dataclass (its "docstring")."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, [*body[1:], None], strict=True):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if is_doc and isinstance(following.value.value, str):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _kind(annotation: str) -> tuple[str, bool]:
    parts = [part.strip() for part in annotation.split("|")]
    nullable = "None" in parts
    base = next(part for part in parts if part != "None")
    if base == "str" and "list[str]" in parts:
        return "strs", nullable
    if base.startswith("list"):
        return "list", nullable
    if base.startswith("dict"):
        return "dict", nullable
    if base not in ("bool", "int", "float", "str"):
        raise TypeError(f"no flag type for annotation {annotation!r}")
    return base, nullable


@cache
def all_flags() -> tuple[Flag, ...]:
    flags = []
    for cls in FLAG_CLASSES:
        docs = field_docs(cls)
        for item in fields(cls):
            kind, nullable = _kind(str(item.type))
            if item.default is not MISSING:
                default = item.default
            elif item.default_factory is not MISSING:
                default = item.default_factory()
            else:
                default = None
            flags.append(
                Flag(item.name, cls, kind, nullable, default, docs.get(item.name) or _knob_help(item.name))
            )
    return tuple(flags)


def _knob_help(name: str) -> str:
    knob = SERVER_KNOBS.get(name)
    if knob is None:
        return ""
    return f"Default of the request field {knob.name!r}, {knob.range_text()}: {knob.help}"


def flags_by_field() -> dict[str, Flag]:
    return {flag.field_name: flag for flag in all_flags()}


def make_arg_parser(prog: str = "vdiff serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a diffusion language model (LLaDA, Dream) behind OpenAI-compatible endpoints. "
        f"Every flag can also be set as a {ENV_PREFIX}* environment variable or a key of the --config YAML "
        "file (precedence: flag > VDIFF_* env > VLLM_* env > YAML > default).",
        epilog="VDIFF_LOGGING_LEVEL (or VLLM_LOGGING_LEVEL) sets the level of vdiff's log (default info; "
        "debug also logs every resolved value).",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,  # `--serve` must not silently mean --served-model-name
    )
    parser.add_argument(
        "model_positional", nargs="?", metavar="MODEL", help="Model directory or Hugging Face repo id."
    )
    parser.add_argument(
        "--config",
        metavar="YAML",
        help=f"YAML file of flag values (keys as flag names). Env: {ENV_PREFIX}CONFIG",
    )
    by_field = flags_by_field()
    grouped: set[str] = set()
    for title, names in FLAG_GROUPS.items():
        group = parser.add_argument_group(title)
        for name in names:
            _add_flag(group, by_field[name])
            grouped.add(name)
    frontend = parser.add_argument_group("Server")
    compat = parser.add_argument_group(
        "vLLM compatibility", "vLLM flags accepted with a warning, or refused until vdiff supports them."
    )
    for flag in all_flags():
        if flag.field_name not in grouped:
            target = {FrontendArgs: frontend, VllmCompatArgs: compat}.get(flag.owner, parser)
            _add_flag(target, flag)
    return parser


class _ExtendOrOne(argparse.Action):
    """Repeatable flag taking one or more values: one value in all stays a str, several become a list."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        before = getattr(namespace, self.dest, None)
        collected = ([before] if isinstance(before, str) else list(before or [])) + list(values)
        setattr(namespace, self.dest, collected[0] if len(collected) == 1 else collected)


def _add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: Flag) -> None:
    names = [*SHORT_FLAGS.get(flag.field_name, ()), flag.long_name]
    shown_default = "" if flag.default in (None, [], {}, "") else f" (default: {flag.default})"
    env = flag.env_name + (f" (or {flag.vllm_env_name})" if flag.vllm_env_name else "")
    help_text = f"{flag.help}{shown_default} Env: {env}".replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": flag.field_name, "help": help_text}
    if flag.kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif flag.field_name in JSON_LIST_FIELDS:
        kwargs["type"] = _argparse_type(_to_list, "a JSON list or a comma-separated list")
        kwargs["metavar"] = "JSON_LIST"
    elif flag.field_name in APPEND_FIELDS:
        kwargs["action"] = "append"
        kwargs["metavar"] = "IMPORT_PATH"
    elif flag.kind == "list":
        kwargs["nargs"] = "+"
    elif flag.kind == "strs":
        kwargs["nargs"] = "+"
        kwargs["action"] = _ExtendOrOne
        kwargs["metavar"] = flag.field_name.upper()
    elif flag.kind == "dict":
        kwargs["type"] = _argparse_type(_to_dict, "a JSON object")
        kwargs["metavar"] = "JSON"
    elif flag.field_name in OPTIONAL_VALUE_FIELDS:
        kwargs["nargs"] = "?"
        kwargs["const"] = OPTIONAL_VALUE_FIELDS[flag.field_name]
        kwargs["metavar"] = flag.field_name.upper()
    else:
        kwargs["type"] = {"int": int, "float": float, "str": str}[flag.kind]
        kwargs["metavar"] = flag.field_name.upper()
    parser.add_argument(*names, **kwargs)


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).expanduser().read_text())
    except OSError as error:
        raise VdiffValidationError(f"cannot read --config {path}: {error.strerror}", "--config") from None
    except yaml.YAMLError as error:
        raise VdiffValidationError(f"--config {path} is not valid YAML: {error}", "--config") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise VdiffValidationError(f"--config {path} must be a mapping of flag names to values", "--config")
    return loaded


def _yaml_values(document: Mapping[str, Any], path: str) -> dict[str, Any]:
    keys = {key: flag for flag in all_flags() for key in flag.yaml_keys}
    values = {}
    for key, value in document.items():
        flag = keys.get(str(key).lstrip("-"))
        if flag is None:
            raise VdiffValidationError(f"--config {path}: unknown key {key!r}", "--config")
        values[flag.field_name] = flag.convert(value, f"--config {path} key {key!r}")
    return values


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for flag in all_flags():
        if flag.env_name in environ:
            values[flag.field_name] = flag.convert(environ[flag.env_name], flag.env_name)
    return values


def _vllm_env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for flag in all_flags():
        name = flag.vllm_env_name
        if name is not None and environ.get(name, "") != "":
            values[flag.field_name] = flag.convert(environ[name], name)
    return values


@dataclass(slots=True)
class ServeArgs:
    """The resolved configuration of one `vdiff serve` invocation, before anything is loaded."""

    values: dict[str, Any]
    """Field name -> value for EngineConfig and FrontendArgs (model may be None here)."""
    sources: dict[str, str]
    """Field name -> where its value came from (flag, env, yaml, default)."""

    def engine_kwargs(self) -> dict[str, Any]:
        names = EngineConfig.field_names()
        return {name: value for name, value in self.values.items() if name in names}

    def frontend_kwargs(self) -> dict[str, Any]:
        names = {item.name for item in fields(FrontendArgs)}
        return {name: value for name, value in self.values.items() if name in names}

    def compat_kwargs(self) -> dict[str, Any]:
        names = {item.name for item in fields(VllmCompatArgs)}
        return {name: value for name, value in self.values.items() if name in names}


def resolve_serve_args(
    parser: argparse.ArgumentParser, argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> ServeArgs:
    """Layer defaults < YAML < VLLM_* env < VDIFF_* env < flags; raises VdiffValidationError naming the
    flag."""
    environ = os.environ if environ is None else environ
    namespace = vars(parser.parse_args(normalize_argv(argv)))
    positional = namespace.pop("model_positional", None)
    if positional is not None:
        if "model" in namespace and namespace["model"] != positional:
            raise VdiffValidationError(
                f"the model is given twice ({positional!r} and --model {namespace['model']!r})", "--model"
            )
        namespace["model"] = positional
    config_path = namespace.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG") or None

    values = {flag.field_name: copy.copy(flag.default) for flag in all_flags()}  # lists/dicts not shared
    sources = dict.fromkeys(values, "default")
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_path:
        layers.append(("yaml", _yaml_values(_read_yaml(config_path), config_path)))
    layers.append(("vllm-env", _vllm_env_values(environ)))
    layers.append(("env", _env_values(environ)))
    layers.append(("flag", namespace))
    for source, layer in layers:
        for name, value in layer.items():
            values[name] = value
            sources[name] = source
    return ServeArgs(values=values, sources=sources)
