"""vLLM's `vllm serve` flags on `vdiff serve`: a vLLM command line configures a real server (CORS,
X-Request-Id, docs off, --middleware, --download-dir, --override-generation-config, VLLM_API_KEY), the flags
vdiff cannot honour yet are refused before loading, abbreviations are errors, a busy port fails at once."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from server.fast_decoding_helpers import make_engine, run
from starlette.requests import Request
from starlette.responses import Response
from vdiff.entrypoints import api_server, cli
from vdiff.entrypoints.cli_args import make_arg_parser, resolve_serve_args
from vdiff.entrypoints.launcher import BackgroundServer
from vdiff.models.loader import hub_token, resolve_model_path
from vdiff.sampling_params import SamplingParams

REPO_ID = "example-org/tiny-llada"
SERVED = "tiny"
VLLM_KEY = "vllm-env-key"
ORIGIN = "https://ui.example"
TAG_HEADER = "x-vdiff-test-middleware"


async def tag_middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """A --middleware function, loaded by import path as vLLM does."""
    response = await call_next(request)
    response.headers[TAG_HEADER] = "seen"
    return response


def fake_hub_cache(root: Path, repo_id: str, checkpoint: Path) -> Path:
    """A Hugging Face cache (models--org--name/refs/main + snapshots/<commit>) holding the checkpoint."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def parse(argv: list[str], environ: dict[str, str] | None = None):
    serve_args = resolve_serve_args(make_arg_parser(), argv, environ or {})
    return (*cli.build_configs(serve_args), serve_args)


def serve_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str], environ: dict[str, str] | None = None
) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.serve(argv, environ or {})
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def download_dir(tmp_path_factory: pytest.TempPathFactory, llada_checkpoint: Path) -> Path:
    root = tmp_path_factory.mktemp("hf-cache")
    fake_hub_cache(root, REPO_ID, llada_checkpoint)
    return root


def vllm_command_line(download_dir: Path) -> list[str]:
    """What a vLLM deployment passes, with every flag of the drop-in issue that vdiff honours or accepts."""
    return [
        REPO_ID, "--download-dir", str(download_dir), "--hf-token", "hf_not_a_real_token",
        "--served-model-name", SERVED, "--dtype", "float", "--generation-config", "vllm",
        "--override-generation-config", '{"temperature": 0.5}', "--max-logprobs", "5",
        "--no-enable-prefix-caching", "--disable-log-requests",
        "--allowed-origins", f'["{ORIGIN}"]', "--allowed-methods", '["GET", "POST"]',
        "--allowed-headers", '["*"]', "--allow-credentials", "--middleware", f"{__name__}.tag_middleware",
        "--disable-fastapi-docs",
        "--enable-request-id-headers", "-tp", "1", "--gpu-memory-utilization", "0.92",
        "--decoding", "threshold", "--max-num-seqs", "2",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def server(download_dir: Path) -> Iterator[BackgroundServer]:
    environ = {"VLLM_API_KEY": VLLM_KEY, "VDIFF_ENABLE_LOG_REQUESTS": "1", "HF_HUB_OFFLINE": "1"}
    config, frontend, _ = parse(vllm_command_line(download_dir), environ)
    with BackgroundServer(config, frontend) as background:
        yield background


def test_the_vllm_command_line_resolves_to_vllm_meanings(download_dir: Path) -> None:
    config, frontend, serve_args = parse(vllm_command_line(download_dir), {"VLLM_API_KEY": VLLM_KEY})
    assert config.model == REPO_ID and config.download_dir == str(download_dir)
    assert config.dtype == "float32"  # vLLM's "float"
    assert config.override_generation_config == {"temperature": 0.5} and config.generation_config == "vllm"
    assert config.max_logprobs == 5 and config.served_model_names == [SERVED]
    assert hub_token(config.hf_token) == "hf_not_a_real_token"
    assert frontend.allowed_origins == [ORIGIN] and frontend.allowed_methods == ["GET", "POST"]
    assert frontend.allow_credentials and frontend.disable_fastapi_docs and frontend.enable_request_id_headers
    assert frontend.middleware == [f"{__name__}.tag_middleware"]
    assert frontend.api_key == VLLM_KEY and serve_args.sources["api_key"] == "vllm-env"
    text = cli.describe_configuration(config, frontend, serve_args)
    assert "hf_not_a_real_token" not in text and VLLM_KEY not in text


@pytest.mark.parametrize(
    ("value", "expected"), [("half", "float16"), ("float16", "float16"), ("bfloat16", "bfloat16"),
                            ("float", "float32"), ("float32", "float32"), ("auto", "auto")],
)  # fmt: skip
def test_dtype_aliases_as_vllm(value: str, expected: str, llada_checkpoint: Path) -> None:
    config, _, _ = parse([str(llada_checkpoint), "--dtype", value])
    assert config.dtype == expected


def test_bare_hf_token_uses_the_login_token(llada_checkpoint: Path) -> None:
    config, _, _ = parse([str(llada_checkpoint), "--hf-token"])
    assert hub_token(config.hf_token) is True
    config, _, _ = parse([str(llada_checkpoint)])
    assert hub_token(config.hf_token) is None  # huggingface_hub then reads HF_TOKEN


def test_download_dir_is_where_repo_ids_are_looked_up(download_dir: Path, llada_checkpoint: Path) -> None:
    resolved = resolve_model_path(REPO_ID, None, download_dir)
    assert resolved.parent.parent == download_dir / "models--example-org--tiny-llada"
    assert (resolved / "config.json").read_text() == (llada_checkpoint / "config.json").read_text()


def test_vllm_api_key_protects_a_real_server(server: BackgroundServer) -> None:
    assert httpx.get(server.url + "/v1/models").status_code == 401
    ok = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {VLLM_KEY}"})
    assert ok.status_code == 200 and ok.json()["data"][0]["id"] == SERVED
    assert httpx.get(server.url + "/health").status_code == 200  # probes stay open, as before


def test_cors_headers_follow_the_allowed_origins(server: BackgroundServer) -> None:
    preflight = httpx.options(
        server.url + "/v1/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    simple = httpx.get(server.url + "/health", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(server.url + "/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_request_id_header_is_echoed_or_generated(server: BackgroundServer) -> None:
    echoed = httpx.get(server.url + "/health", headers={"X-Request-Id": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    generated = httpx.get(server.url + "/v1/models")  # also on errors (401 here)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])


def test_fastapi_docs_are_disabled_and_the_middleware_runs(server: BackgroundServer) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 404, path
    assert httpx.get(server.url + "/health").headers[TAG_HEADER] == "seen"


def test_override_generation_config_sets_the_default_temperature(server: BackgroundServer) -> None:
    engine = server.state.engine.engine  # type: ignore[union-attr]
    assert engine.input_processor.resolve(SamplingParams()).temperature == 0.5
    assert engine.config.dtype == "float32" and engine.loaded.dtype.is_floating_point
    assert server.args.enable_log_requests is False  # --disable-log-requests beats VDIFF_ENABLE_LOG_REQUESTS


def test_override_merges_over_generation_config_json(llada_checkpoint: Path, tmp_path: Path) -> None:
    from vdiff.models.loader import load_generation_config

    model = tmp_path / "model"
    model.mkdir()
    (model / "generation_config.json").write_text(json.dumps({"temperature": 0.7, "top_p": 0.8}))
    config, _, _ = parse([str(llada_checkpoint), "--override-generation-config", '{"temperature": 0.5}'])
    assert load_generation_config(config, model) == {"temperature": 0.5, "top_p": 0.8}
    config, _, _ = parse([str(llada_checkpoint), "--generation-config", "vllm"])
    assert load_generation_config(config, model) == {}


def test_docs_default_is_on_and_cors_is_off_without_flags(llada_checkpoint: Path) -> None:
    from fastapi.testclient import TestClient

    _, frontend, _ = parse([str(llada_checkpoint)])
    client = TestClient(api_server.build_app(frontend))  # no lifespan: no engine needed for the schema
    response = client.get("/docs", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "x-request-id" not in response.headers
    # vLLM registers GET /tokenizer_info only with --enable-tokenizer-info-endpoint
    # (vllm/entrypoints/serve/tokenize/api_router.py)
    paths = api_server.build_app(frontend).openapi()["paths"]
    assert "/tokenizer_info" not in paths and "/tokenize" in paths
    assert client.get("/tokenizer_info").status_code == 404
    _, frontend, _ = parse([str(llada_checkpoint), "--enable-tokenizer-info-endpoint"])
    assert "/tokenizer_info" in api_server.build_app(frontend).openapi()["paths"]


def test_prefix_caching_is_accepted_with_one_warning(
    llada_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vdiff"):
        parse([str(llada_checkpoint), "--enable-prefix-caching"])
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--enable-prefix-caching is ignored" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vdiff"):
        parse(
            [
                str(llada_checkpoint),
                "--no-enable-prefix-caching",
                "-tp",
                "1",
                "--gpu-memory-utilization",
                "0.92",
            ]
        )
    assert not caplog.records


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["--enable-chunked-prefill"], "--enable-chunked-prefill is ignored"),
        (["--swap-space", "4"], "--swap-space is ignored"),
        (["--disable-custom-all-reduce"], "--disable-custom-all-reduce is ignored"),
        (["--no-enable-chunked-prefill", "--swap-space", "0"], None),
        # the values that mean what vdiff does: accepted without a word
        (["--distributed-executor-backend", "mp", "-pp", "1", "--kv-cache-dtype", "auto"], None),
        (["--load-format", "safetensors", "--tokenizer-mode", "hf"], None),
    ],
)
def test_vllm_flags_without_an_effect_warn_once(
    argv: list[str], warning: str | None, llada_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vdiff"):
        parse([str(llada_checkpoint), *argv])
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert messages == ([] if warning is None else [messages[0]])
    if warning is not None:
        assert warning in messages[0]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--distributed-executor-backend", "ray"], "--distributed-executor-backend ray is not supported"),
        (["--pipeline-parallel-size", "2"], "--pipeline-parallel-size 2 is not supported"),
        (["-pp", "2"], "use --tensor-parallel-size"),
        (["--kv-cache-dtype", "fp8"], "--kv-cache-dtype fp8 is not supported"),
        (["--load-format", "gguf"], "--load-format gguf is not supported"),
        (["--tokenizer-mode", "mistral"], "--tokenizer-mode mistral is not supported"),
        (["--reasoning-parser", "deepseek_r1"], "--reasoning-parser deepseek_r1 is not supported"),
    ],
)
def test_vllm_flag_values_vdiff_does_not_implement_exit_2_before_loading(
    argv: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()  # empty: had anything tried to load it, the error would be another one
    assert flag in serve_exit_2([str(model_dir), *argv], capsys)


@pytest.mark.parametrize("argv", [["--tensor-parallel-size", "4096"], ["-tp", "4096"]])
def test_tensor_parallel_beyond_the_devices_is_refused_before_loading(
    argv: list[str], llada_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-tp is vLLM's flag with vLLM's meaning (tests/server/test_tensor_parallel_server.py serves with it);
    more ranks than devices is exit 2 naming the flag, before any worker starts."""
    err = serve_exit_2([str(llada_checkpoint), *argv], capsys)
    assert "--tensor-parallel-size 4096 exceeds the" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--override-generation-config", "temperature=0.5"], "--override-generation-config"),
        (["--allowed-origins", "[1"], "--allowed-origins"),
        (["--middleware", "no_such_module_xyz.Middleware"], "--middleware"),
        (["--middleware", "json.dumps"], "--middleware"),  # neither a class nor an async function
        (["--ssl-certfile", "/no/such/cert.pem"], "--ssl-certfile"),
        (["--ssl-keyfile", "/no/such/key.pem"], "--ssl-certfile"),
        (["--dtype", "float64"], "--dtype"),
        (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
        (["--kv-cache-memory-bytes", "-1"], "--kv-cache-memory-bytes"),
        (["--max-num-batched-tokens", "0"], "--max-num-batched-tokens"),
    ],
)
def test_bad_vllm_flag_values_exit_2(
    argv: list[str], named: str, llada_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = serve_exit_2([str(llada_checkpoint), *argv], capsys)
    assert named in err and "Traceback" not in err


def test_abbreviations_are_errors(llada_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = serve_exit_2([str(llada_checkpoint), "--serve", "x"], capsys)
    assert "unrecognized arguments: --serve x" in err
    err = serve_exit_2([str(llada_checkpoint), "--max-num", "4"], capsys)
    assert "unrecognized arguments: --max-num" in err


def test_env_precedence_flag_over_vdiff_over_vllm_over_yaml(tmp_path: Path) -> None:
    yaml_file = tmp_path / "serve.yaml"
    yaml_file.write_text("api-key: from-yaml\nmax-prompts-per-request: 3\n")
    base = [str(tmp_path), "--config", str(yaml_file)]
    environ = {
        "VLLM_API_KEY": "from-vllm",
        "VLLM_MAX_COMPLETION_PROMPTS": "7",
        "VLLM_LOG_STATS_INTERVAL": "2.5",
    }
    values = resolve_serve_args(make_arg_parser(), base, environ).values
    assert (values["api_key"], values["max_prompts_per_request"], values["log_stats_interval"]) == (
        "from-vllm", 7, 2.5,
    )  # fmt: skip
    values = resolve_serve_args(make_arg_parser(), base, {**environ, "VDIFF_API_KEY": "from-vdiff"}).values
    assert values["api_key"] == "from-vdiff"
    values = resolve_serve_args(make_arg_parser(), [*base, "--api-key", "flag"], environ).values
    assert values["api_key"] == "flag"
    values = resolve_serve_args(
        make_arg_parser(), base, {"VLLM_PORT": "1234", "VLLM_HOST_IP": "10.0.0.1"}
    ).values
    assert (values["port"], values["host"]) == (8000, "0.0.0.0")  # vLLM's distributed-backend variables


def test_draft_model_beside_another_default_policy_is_accepted(
    llada_checkpoint: Path, llada_ar_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, _ = parse(
        [str(llada_checkpoint), "--decoding", "threshold", "--draft-model", str(llada_ar_checkpoint)]
    )
    assert config.decoding == "threshold" and config.draft_model == str(llada_ar_checkpoint)
    err = serve_exit_2([str(llada_checkpoint), "--decoding", "apd"], capsys)
    assert "--decoding apd needs --draft-model" in err
    engine = make_engine(llada_checkpoint, decoding="threshold", draft_model=str(llada_ar_checkpoint))
    assert engine.input_processor.resolve(SamplingParams()).decoding == "threshold"
    apd = SamplingParams(max_tokens=4, decoding="apd", temperature=0.0)
    [finished] = run(engine, [([5, 6, 7], apd)])
    assert len(finished.token_ids) <= 4 and finished.finish_reason in ("stop", "length")


def test_busy_port_exits_2_before_the_model_loads(llada_checkpoint: Path) -> None:
    model = "llada-demo" if cli.demo_model() is not None else str(llada_checkpoint)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "vdiff.entrypoints.cli", "serve", model, "--host", "127.0.0.1",
             "--port", str(port)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "VDIFF_LOGGING_LEVEL": "info"},
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "--port" in result.stderr and "SERVE_ARGS" in result.stderr and "Traceback" not in result.stderr
    assert elapsed < 5, f"took {elapsed:.1f} s: the port must be checked before anything loads"
    assert "Loaded" not in result.stderr


def test_one_info_line_at_start_and_the_full_dump_at_debug(
    llada_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    served: list[socket.socket] = []

    async def fake_run_server(config, frontend, sock) -> None:  # the model is not loaded
        served.append(sock)
        sock.close()

    monkeypatch.setattr(api_server, "run_server", fake_run_server)
    with caplog.at_level(logging.DEBUG, logger="vdiff"):
        assert (
            cli.serve(
                [str(llada_checkpoint), "--host", "127.0.0.1", "--port", "0", "--max-num-seqs", "3"], {}
            )
            == 0
        )
    assert served, "run_server got the socket bound before loading"
    own = [record for record in caplog.records if record.name == "vdiff"]
    info = [record.getMessage() for record in own if record.levelno == logging.INFO]
    assert len(info) == 1
    for essential in (f"model={llada_checkpoint}", "device=auto", "dtype=auto", "decoding=family default",
                      "max_model_len=auto", "max_num_seqs=3"):  # fmt: skip
        assert essential in info[0], essential
    debug = [record.getMessage() for record in own if record.levelno == logging.DEBUG]
    assert any("max_num_seqs = 3 [flag]" in message and "\n" in message for message in debug)


def _self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    key, cert = directory / "key.pem", directory / "cert.pem"
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            return None
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return key, cert
    return _cryptography_certificate(key, cert)


def _cryptography_certificate(key_path: Path, cert_path: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_ssl_flags_serve_https(llada_checkpoint: Path, tmp_path: Path) -> None:
    pair = _self_signed_certificate(tmp_path)
    if pair is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available")
    key, cert = pair
    config, frontend, _ = parse(
        [
            str(llada_checkpoint),
            "--ssl-keyfile",
            str(key),
            "--ssl-certfile",
            str(cert),
            "--ssl-ca-certs",
            str(cert),
        ]
    )
    assert frontend.is_ssl
    with BackgroundServer(config, frontend) as background:
        url = f"https://127.0.0.1:{background.port}"
        assert (
            httpx.get(url + "/health", verify=ssl.create_default_context(cafile=str(cert))).status_code == 200
        )
        with pytest.raises(httpx.HTTPError):
            httpx.get(background.url + "/health", timeout=5)  # plain HTTP is not served
