"""`vdiff serve` flags: generated from the config dataclasses, layered flag > env > YAML > default,
invalid values and combinations refused (exit 2, flag named, no traceback) before any model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from vdiff.config import EngineConfig
from vdiff.entrypoints import cli
from vdiff.entrypoints.cli_args import all_flags, make_arg_parser, resolve_serve_args
from vdiff.entrypoints.frontend_args import FrontendArgs

VLLM_FLAGS = (
    "--host", "--port", "--served-model-name", "--api-key", "--max-model-len", "--dtype",
    "--trust-remote-code", "--max-num-seqs", "--seed", "--quantization", "-q", "--chat-template",
    "--generation-config", "--uvicorn-log-level", "--disable-log-stats", "--enable-log-requests",
    "--root-path", "--config", "--enforce-eager",
)  # fmt: skip
VDIFF_FLAGS = (
    "--max-waiting-requests", "--shutdown-grace-period", "--diffusion-steps", "--block-length", "--remasking",
    "--dream-alg", "--decoding", "--threshold", "--factor", "--kv-cache", "--draft-model",
    "--apd-mixture-weight", "--apd-kv-window", "--apd-max-lookahead",
)  # fmt: skip


def resolve(argv: list[str], environ: dict[str, str] | None = None) -> dict:
    return resolve_serve_args(make_arg_parser(), argv, environ or {}).values


def test_help_lists_every_flag_with_its_env_variable_and_docstring() -> None:
    help_text = make_arg_parser().format_help()
    for flag in (*VLLM_FLAGS, *VDIFF_FLAGS):
        assert flag in help_text, flag
    for flag in all_flags():
        assert flag.env_name in help_text
        assert flag.help, f"{flag.field_name} has no docstring"
    assert "Most sequences denoised together" in help_text  # EngineConfig.max_num_seqs' docstring


def test_every_config_field_has_a_flag() -> None:
    fields = {flag.field_name for flag in all_flags()}
    assert EngineConfig.field_names() <= fields
    assert set(FrontendArgs.__slots__) <= fields


def test_defaults_match_vllm() -> None:
    values = resolve([])
    assert values["host"] == "0.0.0.0"
    assert values["port"] == 8000
    assert values["shutdown_grace_period"] == 30.0
    assert values["api_key"] is None
    assert values["served_model_names"] == []


def test_precedence_flag_over_env_over_yaml_over_default(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        "port: 7000\nmax-num-seqs: 3\nmax_waiting_requests: 5\nseed: 11\ntrust-remote-code: true\n"
    )
    environ = {"VDIFF_MAX_NUM_SEQS": "4", "VDIFF_MAX_WAITING_REQUESTS": "6", "VDIFF_API_KEY": "k-env"}
    parser = make_arg_parser()
    resolved = resolve_serve_args(parser, ["m", "--config", str(config), "--max-num-seqs", "2"], environ)
    values, sources = resolved.values, resolved.sources
    assert (values["max_num_seqs"], sources["max_num_seqs"]) == (2, "flag")
    assert (values["max_waiting_requests"], sources["max_waiting_requests"]) == (6, "env")
    assert (values["port"], sources["port"]) == (7000, "yaml")
    assert values["seed"] == 11 and values["trust_remote_code"] is True
    assert (values["dtype"], sources["dtype"]) == ("auto", "default")
    assert values["api_key"] == "k-env"
    assert values["model"] == "m"


def test_env_types_and_negated_booleans(tmp_path: Path) -> None:
    environ = {
        "VDIFF_TRUST_REMOTE_CODE": "yes",
        "VDIFF_SERVED_MODEL_NAME": "a, b",
        "VDIFF_THRESHOLD": "0.5",
        "VDIFF_CONFIG": str(tmp_path / "missing.yaml"),
    }
    values = resolve(["--no-trust-remote-code", "--config", _yaml(tmp_path, "seed: 1")], environ)
    assert values["trust_remote_code"] is False  # the flag beats the env
    assert values["served_model_names"] == ["a", "b"]
    assert values["threshold"] == 0.5
    assert resolve(["--served-model-name", "x", "y"])["served_model_names"] == ["x", "y"]


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def run_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str], environ: dict[str, str] | None = None
) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.serve(argv, environ or {})
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "environ", "named"),
    [
        (["--decoding", "apd"], {}, "--draft-model"),
        (["--dtype", "float8"], {}, "--dtype"),
        (["--max-num-seqs", "0"], {}, "--max-num-seqs"),
        (["--threshold", "1.5"], {}, "--threshold"),
        (["--remasking", "sideways"], {}, "--remasking"),
        (["--dream-alg", "nope"], {}, "--dream-alg"),
        (["--kv-cache", "paged"], {}, "--kv-cache"),
        (["--kv-cache-vicinity", "-1"], {}, "--kv-cache-vicinity"),
        ([], {"VDIFF_ENFORCE_EAGER": "sometimes"}, "--enforce-eager"),
        (["-q", "bitsandbytes", "--device", "cpu"], {}, "--quantization"),
        (["--quantization", "gptq"], {}, "--quantization"),
        (["--shutdown-grace-period", "-1"], {}, "--shutdown-grace-period"),
        (["--uvicorn-log-level", "loud"], {}, "--uvicorn-log-level"),
        (["--generation-config", "/no/such/dir"], {}, "--generation-config"),
        (["--chat-template", "no-such-file.jinja"], {}, "--chat-template"),
        (["--draft-model", "{model}/missing"], {}, "--draft-model"),
        ([], {"VDIFF_MAX_NUM_SEQS": "many"}, "VDIFF_MAX_NUM_SEQS"),
        ([], {"VDIFF_TRUST_REMOTE_CODE": "perhaps"}, "--trust-remote-code"),
    ],
)
def test_invalid_values_exit_2_naming_the_flag_before_loading(
    argv: list[str], environ: dict[str, str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The model directory is empty: had anything tried to load it, the error would be a different one.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    argv = [arg.replace("{model}", str(model_dir)) for arg in argv]
    err = run_cli([str(model_dir), *argv], capsys, environ)
    assert named in err
    assert "Traceback" not in err


def test_unknown_yaml_key_and_missing_model_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_cli([str(tmp_path), "--config", _yaml(tmp_path, "max-num-seq: 2")], capsys)
    assert "unknown key 'max-num-seq'" in err
    err = run_cli([str(tmp_path / "nope")], capsys)
    assert "--model" in err and "not a directory" in err
    err = run_cli([str(tmp_path), "--model", "other"], capsys)
    assert "given twice" in err


def test_no_model_serves_the_demo_or_says_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if cli.demo_model() is not None:
        config, _ = cli.build_configs(resolve_serve_args(make_arg_parser(), [], {}))
        assert Path(config.model).is_dir() and config.served_model_names
    else:
        err = run_cli([], capsys)
        assert "vdiff serve MODEL" in err and "VDIFF_MODEL" in err


def test_demo_model_names_pass_the_model_checks(capsys: pytest.CaptureFixture[str]) -> None:
    if cli.demo_model() is None:
        pytest.skip("this install has no demo checkpoints")
    argv = ["dream-demo", "--decoding", "apd", "--draft-model", "qwen2-ar-mini-demo"]
    config, _ = cli.build_configs(resolve_serve_args(make_arg_parser(), argv, {}))
    assert (config.model, config.draft_model) == ("dream-demo", "qwen2-ar-mini-demo")
    err = run_cli(["dream-demo-typo"], capsys)
    assert "demo model name" in err


def test_resolved_configuration_log_hides_the_api_key(tmp_path: Path) -> None:
    serve_args = resolve_serve_args(make_arg_parser(), [str(tmp_path), "--api-key", "s3cret"], {})
    config, frontend = cli.build_configs(serve_args)
    text = cli.describe_configuration(config, frontend, serve_args)
    assert "s3cret" not in text and "api_key = '***' [flag]" in text
    assert "max_num_seqs = 256 [default]" in text


def test_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    vdiff = Path(sys.executable).with_name("vdiff")
    result = subprocess.run(
        [str(vdiff), "--model", str(tmp_path), "--decoding", "apd"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--draft-model" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(
        [str(vdiff), "serve", "--port", "abc"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--port" in result.stderr


def test_configuration_doc_lists_every_flag_with_its_env_and_default() -> None:
    """docs/configuration.md's table is the written form of --help: a new flag or a changed default
    must land in the docs too."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    rows = {
        line.split("|")[1]: line
        for line in doc.splitlines()
        if line.startswith("| `") and line.split("|")[2].strip().startswith("`VDIFF_")
    }
    for flag in all_flags():
        row = next((line for cell, line in rows.items() if f"`{flag.long_name}`" in cell), None)
        assert row is not None, f"{flag.long_name} is missing from docs/configuration.md"
        cells = [cell.strip() for cell in row.split("|")]
        assert cells[2] == f"`{flag.env_name}`", row
        expected_default = "—" if flag.default in (None, []) else f"`{flag.default}`"
        assert cells[3] == expected_default, row
