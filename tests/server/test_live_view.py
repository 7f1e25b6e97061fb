"""The /ui page in a real browser: Debian's /usr/bin/chromium driven by Playwright (no browser download)
against a real `vdiff serve` subprocess on loopback (dream-demo with an APD verifier, an API key, a
--root-path prefix).

What a user sees is checked against the API itself: every run shows at least two canvas frames, its mask
count falls to zero, and its answer is what /v1/chat/completions answers for the same request at
temperature 0. The screenshot is written to build/test-artifacts/live-view-MODEL.png (and, for
dream-demo with VDIFF_LIVE_VIEW_SCREENSHOT=PATH, to PATH: that is how docs/images/live-view.png is made).

In CI (CI=true) a missing chromium or playwright fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from vdiff.demo import DEMO_MODELS_DIR

CHROMIUM = Path("/usr/bin/chromium")
KEY = "sk-live-view"
PREFIX = "/vdiff"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
PROMPT = "Reverse 5821."
RUNS = {
    "dream-demo": [
        {"decoding": "reference"},
        {"decoding": "threshold", "threshold": 0.9, "block_length": 4},
        {"decoding": "apd", "apd_mixture_weight": 0.7, "apd_max_lookahead": 4},
    ],
    "llada-demo": [
        {"decoding": "reference", "block_length": 8},
        {"decoding": "threshold", "threshold": 0.9, "block_length": 4},
    ],
}
DRAFT = {"dream-demo": "qwen2-ar-mini-demo", "llada-demo": None}

pytestmark = pytest.mark.slow


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser test: make test installs it)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=sorted(RUNS))
def model(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def server_url(model: str) -> Iterator[str]:
    port = _free_port()
    vdiff = Path(sys.executable).with_name("vdiff")
    command = [
        str(vdiff), "serve", str(DEMO_MODELS_DIR / model), "--served-model-name", model,
        "--host", "127.0.0.1", "--port", str(port), "--api-key", KEY, "--root-path", PREFIX,
        "--disable-log-stats",
    ]  # fmt: skip
    if DRAFT[model]:
        command += ["--draft-model", str(DEMO_MODELS_DIR / DRAFT[model])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}{PREFIX}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"vdiff serve exited {process.returncode}: {process.stderr.read()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vdiff serve did not become healthy in 180 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _api_answer(url: str, model: str, knobs: dict) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
        "temperature": 0,
        **knobs,
    }
    response = httpx.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def test_the_page_watches_the_policies_denoise(server_url: str, model: str) -> None:
    _need(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)")
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        _need(False, "playwright is not installed (pip install -e 'server[test]')")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            # the page's CSP forbids eval; Playwright's wait_for_function evaluates strings
            page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
            page.goto(server_url + "/ui")  # the relative redirect adds the slash under the prefix
            assert page.url == server_url + "/ui/"
            key = page.locator("#api-key")
            key.wait_for(state="visible")  # the server needs a key: the page asks for it
            key.fill(KEY)
            key.press("Enter")
            page.wait_for_function("document.querySelector('#model').options.length > 0")
            assert page.locator("#model").input_value() == model
            page.fill("#prompt", PROMPT)
            page.fill("#max-tokens", "16")
            page.fill("#delay", "0")
            for _ in range(len(RUNS[model]) - 2):  # the page starts with two runs
                page.click("#add-panel")
            for number, knobs in enumerate(RUNS[model], start=1):
                panel = page.locator(f'.panel[data-panel="{number}"]')
                for name, value in knobs.items():
                    field = panel.locator(f'[data-knob="{name}"]')
                    if name == "decoding":
                        field.select_option(str(value))
                    else:
                        field.fill(str(value))
            page.keyboard.press("Tab")
            page.focus("#run")
            page.keyboard.press("Enter")  # keyboard only
            page.wait_for_function(
                "[...document.querySelectorAll('.panel')].every(p => p.dataset.state !== 'running')",
                timeout=120_000,
            )
            for number, knobs in enumerate(RUNS[model], start=1):
                panel = page.locator(f'.panel[data-panel="{number}"]')
                assert panel.locator(".error").inner_text() == "", knobs
                assert panel.get_attribute("data-state") == "done"
                masks = [int(m) for m in panel.get_attribute("data-masks").split(",")]
                assert len(masks) >= 2, (knobs, masks)
                assert masks == sorted(masks, reverse=True) and masks[-1] == 0, (knobs, masks)
                assert panel.locator(".cell").count() >= 16
                assert panel.locator(".answer").inner_text() == _api_answer(server_url, model, knobs), knobs
                assert "tokens per forward" in panel.locator(".summary").inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / f"live-view-{model}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("VDIFF_LIVE_VIEW_SCREENSHOT") and model == "dream-demo":
                shutil.copyfile(shot, os.environ["VDIFF_LIVE_VIEW_SCREENSHOT"])
        finally:
            browser.close()
