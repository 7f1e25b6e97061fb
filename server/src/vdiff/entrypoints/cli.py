"""The `vdiff` command: `vdiff serve [MODEL] [flags]` (also `vdiff --model MODEL [flags]`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import re
import signal
import ssl
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from vdiff.config import EngineConfig
from vdiff.entrypoints.cli_args import ServeArgs, make_arg_parser, resolve_serve_args
from vdiff.entrypoints.frontend_args import FrontendArgs, VllmCompatArgs, bind_socket
from vdiff.errors import EngineDeadError, VdiffValidationError
from vdiff.version import __version__

logger = logging.getLogger("vdiff")

HF_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
NO_MODEL_MESSAGE = (
    "no model to serve: pass one as `vdiff serve MODEL` (a local checkpoint directory or a Hugging Face "
    "repo id already in the local cache), or set --model / VDIFF_MODEL / `model:` in --config"
)
SECRET_FIELDS = ("api_key", "hf_token")
LOGGING_LEVEL_ENV = ("VDIFF_LOGGING_LEVEL", "VLLM_LOGGING_LEVEL")
"""Level of vdiff's own log (default INFO; DEBUG adds the full resolved configuration)."""
PREFIX_CACHING_WARNING = (
    "--enable-prefix-caching is ignored: a diffusion model attends bidirectionally, so a prompt's KV depends "
    "on the whole canvas and cannot be shared between requests (--kv-cache prefix is the approximate "
    "per-request cache)"
)
NO_EFFECT: dict[str, str] = {
    "enable_prefix_caching": PREFIX_CACHING_WARNING,
    "enable_chunked_prefill": "--enable-chunked-prefill is ignored: vdiff chunks by model (a block-diffusion "
    "prompt is prefilled in --max-num-batched-tokens chunks, a bidirectional canvas is forwarded whole)",
    "swap_space": "--swap-space is ignored: a preempted sequence is recomputed, never swapped to CPU memory",
    "disable_custom_all_reduce": "--disable-custom-all-reduce is ignored: tensor parallel all-reduces "
    "through torch.distributed (NCCL, gloo) only",
}
"""vLLM flags (VllmCompatArgs fields) accepted with one warning when set (not for a false or zero value)."""
ACCEPTED_VALUES: dict[str, tuple[tuple[object, ...], str]] = {
    "distributed_executor_backend": (
        ("mp", "uni"),
        "vdiff starts its tensor-parallel ranks as processes (mp)",
    ),
    "pipeline_parallel_size": ((1,), "pipeline parallelism is not implemented; use --tensor-parallel-size"),
    "kv_cache_dtype": (("auto",), "the KV cache is stored in the model's dtype"),
    "load_format": (("auto", "safetensors"), "weights are read from safetensors files"),
    "tokenizer_mode": (("auto", "hf"), "the Hugging Face (fast) tokenizer is used"),
    "reasoning_parser": ((), "no reasoning parser is implemented (reasoning stays in the content)"),
}
"""vLLM flags accepted with the values that mean what vdiff does, else refused (exit 2) with the reason."""


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


def _check_tensor_parallel(config: EngineConfig) -> None:
    """-tp N: the devices and the model's shapes are checked before any worker starts or loads."""
    if config.tensor_parallel_size == 1:
        return
    from vdiff.distributed.group import check_devices, check_parallel_model

    check_devices(config.device, config.tensor_parallel_size)
    check_parallel_model(config)


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
    # --draft-model under another default policy is fine: the verifier loads at startup and requests may
    # pick `decoding: apd` (the operator's "fast" profile with a draft model emits exactly that).
    if (
        config.generation_config not in ("auto", "vdiff", "vllm")
        and not Path(config.generation_config).is_dir()
    ):
        raise VdiffValidationError(
            "--generation-config must be 'auto', 'vllm', 'vdiff' or a directory holding "
            "generation_config.json",
            "--generation-config",
        )
    if config.chat_template:
        from vdiff.tokenizer import read_chat_template

        read_chat_template(config.chat_template)
    _check_quantization(config)
    _check_tensor_parallel(config)
    _check_ssl(frontend)
    _check_middleware(frontend)
    check_vllm_compat(VllmCompatArgs(**serve_args.compat_kwargs()))
    return config, frontend


def _check_ssl(frontend: FrontendArgs) -> None:
    """Load the key, certificate and CA files now, so a wrong path fails before the model loads."""
    if not frontend.is_ssl:
        if frontend.ssl_ca_certs:
            raise VdiffValidationError("--ssl-ca-certs needs --ssl-certfile", "--ssl-certfile")
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for flag, path in (("--ssl-certfile", frontend.ssl_certfile), ("--ssl-keyfile", frontend.ssl_keyfile),
                       ("--ssl-ca-certs", frontend.ssl_ca_certs)):  # fmt: skip
        if path and not Path(path).is_file():
            raise VdiffValidationError(f"{flag} {path!r} is not a file", flag)
    try:
        context.load_cert_chain(str(frontend.ssl_certfile), frontend.ssl_keyfile)
    except (ssl.SSLError, OSError) as error:
        raise VdiffValidationError(
            f"--ssl-certfile/--ssl-keyfile cannot be loaded: {error}", "--ssl-certfile"
        ) from None
    if frontend.ssl_ca_certs:
        try:
            context.load_verify_locations(frontend.ssl_ca_certs)
        except (ssl.SSLError, OSError) as error:
            raise VdiffValidationError(
                f"--ssl-ca-certs cannot be loaded: {error}", "--ssl-ca-certs"
            ) from None


def _check_middleware(frontend: FrontendArgs) -> None:
    if not frontend.middleware:
        return
    from vdiff.entrypoints.middleware import import_middleware

    for path in frontend.middleware:
        import_middleware(path)


def check_vllm_compat(compat: VllmCompatArgs) -> None:
    """vLLM flags without an effect here get one warning; values vdiff does not implement are refused."""
    for name, warning in NO_EFFECT.items():
        if getattr(compat, name):
            logger.warning(warning)
    for name, (accepted, reason) in ACCEPTED_VALUES.items():
        value = getattr(compat, name)
        if value is None or value in accepted:
            continue
        flag = "--" + name.replace("_", "-")
        shown = ", ".join(str(v) for v in accepted)
        raise VdiffValidationError(
            f"{flag} {value} is not supported: {reason}" + (f" (accepted: {shown})" if shown else ""), flag
        )


def summarize_configuration(config: EngineConfig) -> str:
    """The one INFO line at start: what is served, where and how."""
    return (
        f"vdiff {__version__} resolved configuration: model={config.model} device={config.device} "
        f"dtype={config.dtype} decoding={config.decoding or 'family default'} "
        f"max_model_len={config.max_model_len or 'auto'} "
        f"max_num_seqs={config.max_num_seqs} (every value at {LOGGING_LEVEL_ENV[0]}=debug)"
    )


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


def _logging_level(environ: Mapping[str, str]) -> int:
    for name in LOGGING_LEVEL_ENV:
        value = environ.get(name, "").strip()
        if value:
            level = logging.getLevelName(value.upper())
            if not isinstance(level, int):
                raise VdiffValidationError(
                    f"{name}={value!r} is not a logging level (debug, info, ...)", name
                )
            return level
    return logging.INFO


def serve(argv: Sequence[str], environ: Mapping[str, str] | None = None, prog: str = "vdiff serve") -> int:
    environ = os.environ if environ is None else environ
    parser = make_arg_parser(prog)
    try:
        logging.basicConfig(
            level=_logging_level(environ),
            format="%(levelname)s %(asctime)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
        serve_args = resolve_serve_args(parser, argv, environ)
        config, frontend = build_configs(serve_args)
    except VdiffValidationError as error:
        _fail(parser, error)
    try:
        sock = bind_socket(frontend)  # before anything heavy is imported or loaded: a busy port fails now
    except VdiffValidationError as error:
        print(f"{prog}: error: {error.message}", file=sys.stderr)
        return 2
    logger.info(summarize_configuration(config))
    logger.debug(describe_configuration(config, frontend, serve_args))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    from vdiff.entrypoints.api_server import run_server

    if config.tensor_parallel_size > 1:
        from vdiff.distributed.group import exit_process_on_worker_loss

        exit_process_on_worker_loss()
    try:
        asyncio.run(run_server(config, frontend, sock))
    except VdiffValidationError as error:  # found while loading (e.g. a checkpoint without a mask token)
        print(f"{prog}: error: {error.message}", file=sys.stderr)
        return 1
    except EngineDeadError as error:  # the server stopped because the engine loop died
        logger.error("exiting with status 1: %s", error)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_tensor_parallel_workers()
    return 0


def _stop_tensor_parallel_workers() -> None:
    """Every rank stops with the server, whatever ended it."""
    if "vdiff.distributed.group" in sys.modules:
        sys.modules["vdiff.distributed.group"].shutdown_workers()


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
