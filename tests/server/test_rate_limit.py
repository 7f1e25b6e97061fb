"""Several API keys (flags and a key file re-read when it changes) and the per-key rate limits on a real
server: 401 for a wrong key, 429 with Retry-After and OpenAI's x-ratelimit-* headers per key, per client
address without keys, probes never limited, tokens per minute, metrics by key name (never the key).

The limiter's clock is replaced by a manual one, so a "minute" passes without waiting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server.metrics_scrape import scrape
from vdiff.config import EngineConfig
from vdiff.entrypoints.api_keys import ApiKeyStore, default_key_name, parse_key_lines
from vdiff.entrypoints.cli_args import make_arg_parser, resolve_serve_args
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer
from vdiff.entrypoints.rate_limit import RateLimiter, format_reset
from vdiff.errors import VdiffValidationError

MODEL = "tiny-llada"
ALPHA, BETA = "alpha-s3cret", "beta-s3cret"
FILE_KEY, ROTATED_KEY = "gamma-s3cret", "delta-s3cret"
REQUESTS_PER_MINUTE = 3
TOKENS_PER_MINUTE = 10
PROBES = ("/health", "/ping", "/version", "/metrics")


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def write_atomically(path: Path, text: str) -> None:
    """As a Secret volume rotates: a new file swapped in (a new inode), never a half-written one."""
    staging = path.with_suffix(".tmp")
    staging.write_text(text)
    os.replace(staging, path)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text(f"# team keys\n\ngamma:{FILE_KEY}\n")
    return path


@pytest.fixture(scope="module")
def keyed(llada_checkpoint: Path, key_file: Path) -> Iterator[tuple[BackgroundServer, ManualClock]]:
    config = EngineConfig(model=str(llada_checkpoint), served_model_names=[MODEL], max_num_seqs=2)
    args = FrontendArgs(
        api_key=[ALPHA, BETA],
        api_key_file=str(key_file),
        rate_limit_requests_per_minute=REQUESTS_PER_MINUTE,
        rate_limit_tokens_per_minute=TOKENS_PER_MINUTE,
    )
    clock = ManualClock()
    with BackgroundServer(config, args) as background:
        assert background.state is not None
        background.state.access.limiter.clock = clock
        yield background, clock


@pytest.fixture
def server(keyed: tuple[BackgroundServer, ManualClock]) -> BackgroundServer:
    background, clock = keyed
    clock.advance(3600)  # every bucket full again: each test starts fresh
    return background


@pytest.fixture
def clock(keyed: tuple[BackgroundServer, ManualClock]) -> ManualClock:
    return keyed[1]


def models(server: BackgroundServer, key: str) -> httpx.Response:
    return httpx.get(server.url + "/v1/models", headers=bearer(key), timeout=60)


def complete(server: BackgroundServer, key: str, max_tokens: int = 8) -> httpx.Response:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": max_tokens, "ignore_eos": True, "steps": 2}
    return httpx.post(server.url + "/v1/completions", json=body, headers=bearer(key), timeout=120)


def test_every_key_works_and_a_wrong_one_is_401(server: BackgroundServer) -> None:
    for key in (ALPHA, BETA, FILE_KEY):
        assert models(server, key).status_code == 200, key
    wrong = models(server, "not-a-key")
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "AuthenticationError"
    assert "x-ratelimit-limit-requests" not in wrong.headers  # an unknown caller is not a limited key
    assert httpx.get(server.url + "/v1/models").status_code == 401


def test_a_rotated_key_file_takes_effect(server: BackgroundServer, key_file: Path) -> None:
    assert models(server, FILE_KEY).status_code == 200
    try:
        write_atomically(key_file, f"gamma:{ROTATED_KEY}\n")
        assert models(server, FILE_KEY).status_code == 401
        assert models(server, ROTATED_KEY).status_code == 200
        assert models(server, ALPHA).status_code == 200  # flag keys are not in the file
    finally:
        write_atomically(key_file, f"gamma:{FILE_KEY}\n")
    assert models(server, FILE_KEY).status_code == 200


def test_requests_per_minute_gives_429_per_key(server: BackgroundServer, clock: ManualClock) -> None:
    for remaining in range(REQUESTS_PER_MINUTE - 1, -1, -1):
        ok = models(server, ALPHA)
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-limit-requests"] == str(REQUESTS_PER_MINUTE)
        assert ok.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert ok.headers["x-ratelimit-limit-tokens"] == str(TOKENS_PER_MINUTE)
    refused = models(server, ALPHA)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "RateLimitError" and error["code"] == 429 and "per minute" in error["message"]
    # One request refills every 60/3 = 20 s.
    assert refused.headers["Retry-After"] == "20"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert models(server, BETA).status_code == 200  # another key has its own bucket
    assert complete(server, ALPHA).status_code == 429  # every generation endpoint is limited
    clock.advance(20)
    assert models(server, ALPHA).status_code == 200
    assert models(server, ALPHA).status_code == 429


def test_probes_are_never_limited(server: BackgroundServer) -> None:
    for _ in range(REQUESTS_PER_MINUTE):
        models(server, ALPHA)
    assert models(server, ALPHA).status_code == 429
    for _ in range(2 * REQUESTS_PER_MINUTE):
        for path in PROBES:
            response = httpx.get(server.url + path, headers=bearer(ALPHA))
            assert response.status_code == 200, path
            assert "x-ratelimit-limit-requests" not in response.headers


def test_tokens_per_minute_counts_generated_tokens(server: BackgroundServer, clock: ManualClock) -> None:
    first = complete(server, BETA)
    assert first.status_code == 200, first.text
    used = first.json()["usage"]["completion_tokens"]
    assert used == 8
    second = complete(server, BETA)  # 10 - 8 = 2 left: admitted, and overshoots to -6
    assert second.status_code == 200
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"
    refused = complete(server, BETA)
    assert refused.status_code == 429 and "tokens" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) == 42  # (1 - (-6)) tokens at 10/60 per second
    assert models(server, BETA).status_code == 429  # over the token window: every new request waits
    assert complete(server, ALPHA).status_code == 200
    clock.advance(42)
    assert complete(server, BETA).status_code == 200


def test_metrics_name_keys_and_never_show_them(server: BackgroundServer) -> None:
    models(server, ALPHA)
    for _ in range(REQUESTS_PER_MINUTE + 1):
        models(server, FILE_KEY)
    text = httpx.get(server.url + "/metrics").text
    for secret in (ALPHA, BETA, FILE_KEY, ROTATED_KEY):
        assert secret not in text
    samples = scrape(server)
    assert samples["vdiff:requests_by_key_total{key_name=gamma}"] >= REQUESTS_PER_MINUTE + 1
    assert samples["vdiff:rate_limited_total{key_name=gamma,limit=requests}"] >= 1
    assert samples[f"vdiff:requests_by_key_total{{key_name={default_key_name(ALPHA)}}}"] >= 1


@pytest.fixture(scope="module")
def keyless(llada_checkpoint: Path) -> Iterator[BackgroundServer]:
    config = EngineConfig(model=str(llada_checkpoint), served_model_names=[MODEL], max_num_seqs=1)
    with BackgroundServer(config, FrontendArgs(rate_limit_requests_per_minute=2)) as background:
        assert background.state is not None
        background.state.access.limiter.clock = ManualClock()
        yield background


def from_address(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


def test_without_keys_the_limit_is_per_client_address(keyless: BackgroundServer) -> None:
    with from_address("127.0.0.1") as first, from_address("127.0.0.2") as second:
        assert [first.get(keyless.url + "/v1/models").status_code for _ in range(3)] == [200, 200, 429]
        assert second.get(keyless.url + "/v1/models").status_code == 200
        assert first.get(keyless.url + "/health").status_code == 200
    samples = scrape(keyless)
    assert samples["vdiff:rate_limited_total{key_name=anonymous,limit=requests}"] == 1


# Units: the key file's format, the limiter's memory, the flags.
def test_key_lines_names_comments_and_blank_lines() -> None:
    keys = parse_key_lines("# comment\n\n  plain-key  \nteam-a:key:with:colons\n")
    assert [key.name for key in keys] == [default_key_name("plain-key"), "team-a"]
    store = ApiKeyStore(key_file=None, static_keys=["one"])
    assert store.authenticate("one") == default_key_name("one") and store.authenticate("on") is None


def test_a_secret_directory_is_one_key_per_file(tmp_path: Path) -> None:
    (tmp_path / "team-a").write_text("key-a\n")
    (tmp_path / "..data").mkdir()  # a Secret volume's bookkeeping
    store = ApiKeyStore(key_file=str(tmp_path))
    assert store.authenticate("key-a") == "team-a"
    (tmp_path / "team-b").write_text("key-b")
    assert store.authenticate("key-b") == "team-b"
    empty = tmp_path / "empty"
    empty.write_text("")
    assert ApiKeyStore(key_file=str(empty)).is_required  # an empty file locks out, never opens


def test_idle_clients_are_forgotten() -> None:
    clock = ManualClock()
    limiter = RateLimiter(60, None, clock=clock, max_clients=100)
    for number in range(1000):
        limiter.admit(f"client-{number}")
    assert limiter.num_clients == 100
    clock.advance(61)
    limiter.admit("late")
    assert limiter.num_clients == 1


def test_reset_durations_as_openai() -> None:
    assert (format_reset(0.02), format_reset(1.0), format_reset(20.0), format_reset(360)) == (
        "20ms", "1s", "20s", "6m0s",
    )  # fmt: skip


def test_api_key_flag_repeats_and_takes_several_values(tmp_path: Path) -> None:
    parser = make_arg_parser()
    values = resolve_serve_args(parser, ["m", "--api-key", "a", "b", "--api-key", "c"], {}).values
    assert values["api_key"] == ["a", "b", "c"]
    assert resolve_serve_args(parser, ["m", "--api-key", "a"], {}).values["api_key"] == "a"
    assert FrontendArgs(api_key=["a", "b"]).api_keys == ["a", "b"]
    with pytest.raises(VdiffValidationError, match="--api-key-file"):
        FrontendArgs(api_key_file=str(tmp_path / "missing"))
    with pytest.raises(VdiffValidationError, match="--rate-limit-requests-per-minute"):
        FrontendArgs(rate_limit_requests_per_minute=0)
