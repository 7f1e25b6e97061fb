"""stream_canvas over HTTP (entrypoints/openai/canvas_stream.py) and the /ui page's routes, on a real
uvicorn on loopback serving the shipped dream-demo with qwen2-ar-mini-demo as APD verifier.

vdiff's own extension: no upstream rule to match. The rules checked are the ones docs/api-reference.md
states: frames travel as extra chunks with "choices": [] (so the openai client parses them, as it parses
vLLM's usage chunk), the text of a watched stream is the text of the same request unwatched, an ordinary
stream carries no frame, and the field is refused (400 naming it) where it cannot be honoured.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from vdiff.config import EngineConfig
from vdiff.demo import DEMO_MODELS_DIR
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

MODEL = "dream-demo"
KEY = "sk-canvas-test"
MESSAGES = [{"role": "user", "content": "Reverse 5821."}]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    config = EngineConfig(
        model=str(DEMO_MODELS_DIR / MODEL),
        served_model_names=[MODEL],
        draft_model=str(DEMO_MODELS_DIR / "qwen2-ar-mini-demo"),
        device="cpu",
    )
    with BackgroundServer(config, FrontendArgs(api_key=KEY, root_path="/prefix")) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _frames(chunks: list) -> list[dict]:
    return [chunk.vdiff_canvas for chunk in chunks if getattr(chunk, "vdiff_canvas", None)]


@pytest.mark.parametrize(
    "knobs",
    [
        {"decoding": "reference", "steps": 8},
        {"decoding": "threshold", "threshold": 0.8, "block_length": 4},
        {"decoding": "apd", "apd_max_lookahead": 3},
    ],
    ids=lambda knobs: knobs["decoding"],
)
def test_chat_stream_carries_frames_and_the_same_text(client: openai.OpenAI, knobs: dict) -> None:
    kwargs = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    whole = client.chat.completions.create(**kwargs, extra_body=knobs)
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, extra_body={**knobs, "stream_canvas": True})
    )
    frames = _frames(chunks)
    assert len(frames) >= 2
    assert all(chunk.choices == [] for chunk in chunks if getattr(chunk, "vdiff_canvas", None))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    masks = [frame["num_masked"] for frame in frames]
    assert masks == sorted(masks, reverse=True) and masks[-1] == 0
    assert [frame["step"] for frame in frames] == list(range(1, len(frames) + 1))
    assert {frame["policy"] for frame in frames} == {knobs["decoding"]}
    committed = {token["position"]: token for frame in frames for token in frame["committed"]}
    answer_end = frames[-1]["answer_end"]
    assert "".join(committed[p]["text"] for p in range(answer_end)) == text


def test_plain_streams_carry_no_frame(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, stream=True
        )
    )
    assert chunks and not _frames(chunks)
    assert all("vdiff_canvas" not in chunk.model_dump_json() for chunk in chunks)


def test_completions_stream_carries_frames_per_choice(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=["Copy 123.", "Copy 4567."],
            max_tokens=8,
            temperature=0,
            stream=True,
            extra_body={"stream_canvas": True, "decoding": "reference", "steps": 8},
        )
    )
    frames = _frames(chunks)
    assert {frame["index"] for frame in frames} == {0, 1}
    for index in (0, 1):
        assert [f["num_masked"] for f in frames if f["index"] == index][-1] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"stream_canvas": True}, "needs stream"),
        ({"stream_canvas": True, "stream": True, "max_tokens": 5000}, "max_tokens <= 4096"),
    ],
)
def test_refused_with_the_field_named(server: BackgroundServer, body: dict, message: str) -> None:
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 8, **body},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "stream_canvas" and message in error["message"]


def test_same_auth_as_the_api(server: BackgroundServer) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8, "stream": True, "stream_canvas": True}
    assert httpx.post(server.url + "/v1/chat/completions", json=body).status_code == 401


def test_the_page_is_public_and_relative(server: BackgroundServer) -> None:
    """The page holds no data (it asks for the key); a relative redirect adds the slash its relative URLs
    need, under any prefix."""
    redirect = httpx.get(server.url + "/prefix/ui")
    assert redirect.status_code == 307 and redirect.headers["location"] == "ui/"
    page = httpx.get(server.url + "/prefix/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="app.js"' in page.text and 'href="style.css"' in page.text
    script = httpx.get(server.url + "/prefix/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "http://" not in script.text and "https://" not in script.text  # no CDN, no absolute URL
    assert httpx.get(server.url + "/prefix/ui/secrets.txt").status_code == 404


def test_disable_ui(dream_checkpoint) -> None:
    config = EngineConfig(model=str(dream_checkpoint), device="cpu")
    with BackgroundServer(config, FrontendArgs(disable_ui=True)) as background:
        assert httpx.get(background.url + "/ui/").status_code == 404
        assert httpx.get(background.url + "/health").status_code == 200
