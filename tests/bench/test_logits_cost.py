"""The logits-cost benchmark runs every configuration on a tiny batch and vocabulary (no timing checks)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import logits_cost


def test_logits_cost_writes_every_configuration_and_ratio(tmp_path: Path) -> None:
    logits_cost.main(
        [
            *("--models", "llada-demo", "--num-requests", "2", "--max-tokens", "8", "--reference-steps", "4"),
            *("--rounds", "1", "--vocab", "500", "--vocab-rows", "4", "--vocab-prompt", "8"),
            *(
                "--vocab-answer",
                "16",
                "--vocab-cases",
                "0:4",
                "12:1",
                "--name",
                "l",
                "--out-dir",
                str(tmp_path),
            ),
        ]
    )
    results = json.loads((tmp_path / "l.json").read_text())
    decodings = results["engine"]["llada-demo"]
    assert set(decodings) == {"threshold (default)", "reference, 4 steps"}
    for configs in decodings.values():
        assert list(configs) == list(logits_cost.CONFIGURATIONS)
        assert configs["plain"]["vs_plain"] == 1.0
        for name, cell in configs.items():
            assert cell["steps"] >= 1 and cell["ms_per_step"] > 0
            # ignore_eos: every configuration decodes the same number of tokens
            assert cell["every_request_generated_max_tokens"] and cell["generated_tokens"] == 2 * 8
            assert cell["same_tokens_every_round"]
            assert cell["logprobs_returned"] == name.endswith("logprobs")
            # the probe timed the engine's rule functions, which every step calls
            assert (cell["rules_ms_per_step"] > 0) and (cell["rules_vs_rest_of_step"] >= 0)
            assert cell["forwards_per_step"] >= 1 and cell["key_positions_per_step"] > 0
        # faint rules do all the work of the rules and leave the answer (so the forwards) as plain's
        assert configs["faint rules+logprobs"]["same_tokens_as_plain"]
        assert (
            configs["faint rules+logprobs"]["key_positions_per_step"]
            == configs["plain"]["key_positions_per_step"]
        )
    assert decodings["reference, 4 steps"]["plain"]["steps"] == 4
    first, last = results["vocab"]
    assert first["min_tokens_active"] and not last["min_tokens_active"]
    assert (first["committed_rows_per_sequence"], last["committed_rows_per_sequence"]) == (4, 1)
    assert set(first["configurations"]) == {*logits_cost.CONFIGURATIONS, logits_cost.LOGPROBS_ONLY}
    assert all(config["ms"] > 0 for config in first["configurations"].values())
    table = (tmp_path / "l.md").read_text()
    assert "| llada-demo | reference, 4 steps | rules+logprobs |" in table and "vocab 500" in table
