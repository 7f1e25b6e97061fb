"""Every decoding knob of vdiff/knobs.py is documented as a request field in docs/api-reference.md."""

from __future__ import annotations

from pathlib import Path

from vdiff.knobs import KNOBS

DOC = Path(__file__).resolve().parents[2] / "docs" / "api-reference.md"


def test_every_knob_is_documented_as_a_request_field() -> None:
    text = DOC.read_text()
    missing = [knob.name for knob in KNOBS if f"`{knob.name}`" not in text]
    assert not missing, f"knobs missing from docs/api-reference.md: {missing}"
