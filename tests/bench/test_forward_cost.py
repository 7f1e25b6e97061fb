"""The forward-cost benchmark runs the engine's cached and uncached steps at given shapes (no timings)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import forward_cost


def test_forward_cost_queries_what_each_cache_mode_recomputes(tmp_path: Path) -> None:
    forward_cost.main(
        [
            *("--models", "llada-demo", "dream-demo", "--prompt", "8", "--generate", "16", "--block", "4"),
            *(
                "--rows",
                "1",
                "2",
                "--repeats",
                "1",
                "--vicinity",
                "3",
                "--name",
                "f",
                "--out-dir",
                str(tmp_path),
            ),
        ]
    )
    results = json.loads((tmp_path / "f.json").read_text())
    for model, shifted in (("llada-demo", 0), ("dream-demo", 1)):
        cells = results["models"][model]
        assert [cell["rows"] for cell in cells] == [1, 2]
        for cell in cells:
            modes = cell["modes"]
            # no cache: the whole canvas; prefix: the block and everything after; dual: the block;
            # Dream keeps the position left of the block as a query (logit shift)
            assert modes["none"]["query_positions"] == 24 and modes["none"]["cached_positions"] == 0
            assert modes["prefix"]["query_positions"] == 16 + shifted
            assert modes["prefix"]["cached_positions"] == 8 - shifted
            assert modes["dual"]["query_positions"] == 4 + shifted
            assert modes["dual"]["cached_positions"] == 24 - 4 - shifted
            assert modes["dual-vicinity"]["query_positions"] == 4 + 3 + shifted
            assert modes["dual-vicinity"]["cached_positions"] == 24 - 4 - 3 - shifted
            assert modes["none"]["vs_no_cache"] == 1.0
            assert all(mode["ms_per_forward"] > 0 for mode in modes.values())
    assert "| llada-demo | 8 + 16 | 2 |" in (tmp_path / "f.md").read_text()
