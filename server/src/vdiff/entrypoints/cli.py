"""The `vdiff` command: `vdiff serve [MODEL] [flags]` (also `vdiff --model MODEL [flags]`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from vdiff.config import EngineConfig
from vdiff.entrypoints.cli_args import ServeArgs, make_arg_parser, resolve_serve_args
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.errors import EngineDeadError, VdiffValidationError
from vdiff.version import __version__

logger = logging.getLogger("vdiff")

HF_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
NO_MODEL_MESSAGE = (
    "no model to serve: pass one as `vdiff serve MODEL` (a local checkpoint directory or a Hugging Face "
    "repo id already in the local cache), or set --model / VDIFF_MODEL / `model:` in --config"
)
SECRET_FIELDS = ("api_key",)


def demo_model() -> tuple[str, str] | None:
    """(path, served name) of the shipped demo checkpoint, when this install has it."""
    if importlib.util.find_spec("vdiff.demo") is None:
        return None
    from vdiff import demo

    if not demo.is_demo_model_available():
        return None
    return str(demo.demo_model_path()), demo.DEFAULT_DEMO_MODEL


def _check_model_reference(value: str, flag: str) -> None:
    from vdiff.demo import shipped_demo_path

    path = Path(value).expanduser()
    if not path.exists() and shipped_demo_path(value) is not None:
        return
    looks_like_path = value.startswith(("/", ".", "~")) or path.exists() or not HF_REPO_ID.match(value)
    if looks_like_path and not path.is_dir():
        raise VdiffValidationError(
            f"{flag} {value!r} is not a directory, a demo model name or a Hugging Face repo id of the form "
            "org/name",
            flag,
        )


def _check_quantization(config: EngineConfig) -> None:
    """bitsandbytes runs on CUDA only: say so now rather than after minutes of loading."""
    if config.quantization is None:
        return
    if config.device in ("cpu", "mps"):
        raise VdiffValidationError(
            f"--quantization {config.quantization} needs a CUDA GPU; "
            f"it cannot run with --device {config.device}",
            "--quantization",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise VdiffValidationError(
            f"--quantization {config.quantization} needs the bitsandbytes package "
            "(pip install 'vdiff-server[gpu]')",
            "--quantization",
        )
    import torch

    if not torch.cuda.is_available():
        raise VdiffValidationError(
            f"--quantization {config.quantization} needs a CUDA GPU and none is available", "--quantization"
        )


def build_configs(serve_args: ServeArgs) -> tuple[EngineConfig, FrontendArgs]:
    """Validate every value and combination that can be checked without loading the model."""
    engine_kwargs = serve_args.engine_kwargs()
    if not engine_kwargs.get("model"):
        demo = demo_model()
        if demo is None:
            raise VdiffValidationError(NO_MODEL_MESSAGE, "--model")
        engine_kwargs["model"] = demo[0]
        if not engine_kwargs.get("served_model_names"):
            engine_kwargs["served_model_names"] = [demo[1]]
    if any(not name.strip() for name in engine_kwargs.get("served_model_names") or []):
        raise VdiffValidationError("--served-model-name values must not be empty", "--served-model-name")
    frontend = FrontendArgs(**serve_args.frontend_kwargs())
    config = EngineConfig(**engine_kwargs)
    _check_model_reference(config.model, "--model")
    if config.tokenizer:
        _check_model_reference(config.tokenizer, "--tokenizer")
    if config.draft_model:
        _check_model_reference(config.draft_model, "--draft-model")
    if config.draft_model and config.decoding != "apd":
        raise VdiffValidationError("--draft-model is only used with --decoding apd", "--draft-model")
    if config.generation_config not in ("auto", "vdiff") and not Path(config.generation_config).is_dir():
        raise VdiffValidationError(
            "--generation-config must be 'auto', 'vdiff' or a directory holding generation_config.json",
            "--generation-config",
        )
    if config.chat_template:
        from vdiff.tokenizer import read_chat_template

        read_chat_template(config.chat_template)
    _check_quantization(config)
    return config, frontend


def describe_configuration(config: EngineConfig, frontend: FrontendArgs, serve_args: ServeArgs) -> str:
    lines = [f"vdiff {__version__} resolved configuration (value [source]):"]
    for owner in (config, frontend):
        for name in owner.__slots__:  # type: ignore[attr-defined]
            value: Any = getattr(owner, name)
            if name in SECRET_FIELDS and value:
                value = "***"
            lines.append(f"  {name} = {value!r} [{serve_args.sources.get(name, 'default')}]")
    return "\n".join(lines)


def _fail(parser: argparse.ArgumentParser, error: VdiffValidationError) -> NoReturn:
    parser.error(error.message)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """Before the server runs (model loading) a SIGTERM just ends the process cleanly."""
    raise SystemExit(0)


def serve(argv: Sequence[str], environ: Mapping[str, str] | None = None, prog: str = "vdiff serve") -> int:
    parser = make_arg_parser(prog)
    try:
        serve_args = resolve_serve_args(parser, argv, environ)
        config, frontend = build_configs(serve_args)
    except VdiffValidationError as error:
        _fail(parser, error)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logger.info(describe_configuration(config, frontend, serve_args))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    from vdiff.entrypoints.api_server import run_server

    try:
        asyncio.run(run_server(config, frontend))
    except VdiffValidationError as error:  # found while loading (e.g. a checkpoint without a mask token)
        print(f"{prog}: error: {error.message}", file=sys.stderr)
        return 1
    except EngineDeadError as error:  # the server stopped because the engine loop died
        logger.error("exiting with status 1: %s", error)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--version", "-V", "version"):
        print(__version__)
        return
    if args and args[0] == "serve":
        sys.exit(serve(args[1:], prog="vdiff serve"))
    sys.exit(serve(args, prog="vdiff"))


if __name__ == "__main__":
    main()
