"""The README's first promise: `vdiff serve` with no model serves the demo LLaDA model, and the README's
curl gets the answer the README shows. The request body and the answer are read from README.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from vdiff.demo import is_demo_model_available
from vdiff.entrypoints import cli
from vdiff.entrypoints.cli_args import make_arg_parser, resolve_serve_args
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_quickstart() -> tuple[str, dict, str]:
    """(path, JSON body, expected assistant content) of the README's first curl."""
    text = README.read_text()
    curl = re.search(r"curl -s http://localhost:8000(\S+) .*?-d '(\{.*?\})'\n# (\{.*)", text, re.DOTALL)
    assert curl, "README.md lost its quick-start curl"
    expected = re.search(r'"content": "([^"]*)"', curl.group(3))
    assert expected, "README.md's quick-start shows no answer"
    return curl.group(1), json.loads(curl.group(2)), expected.group(1)


@pytest.mark.skipif(not is_demo_model_available(), reason="the demo checkpoint is not installed")
def test_readme_curl_gets_the_readme_answer_from_vdiff_serve_without_a_model() -> None:
    path, body, expected = readme_quickstart()
    config, _ = cli.build_configs(resolve_serve_args(make_arg_parser(), [], {}))
    assert body["model"] in config.served_model_names
    with BackgroundServer(config, FrontendArgs()) as server:
        response = httpx.post(server.url + path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    reply = response.json()["choices"][0]
    assert reply["message"]["content"] == expected
    assert reply["finish_reason"] == "stop"
