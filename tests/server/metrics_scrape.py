"""Read a running server's /metrics into a flat dict (for the tests that check metric values)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from vdiff.entrypoints.launcher import BackgroundServer


def scrape(server: BackgroundServer) -> dict[str, float]:
    """Every sample of /metrics as 'name{label=value,...}' -> value (sorted labels; no model_name, engine)."""
    samples = {}
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        for sample in family.samples:
            labels = ",".join(
                f"{k}={v}" for k, v in sorted(sample.labels.items()) if k not in ("model_name", "engine")
            )
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
