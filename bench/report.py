"""Aggregate benchmark runs: accuracy, tokens/s, forwards per token, latency percentiles, ratios, plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.engine_driver import RunRecord
from bench.policies import REFERENCE_POLICY
from bench.tasks import MULTI_ANSWER_TASKS, SINGLE_ANSWER_TASKS

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DIFFUSION_DEMO_MODELS = ("llada-demo", "dream-demo")
"""The models every benchmark runs by default."""


def save_results(results: dict[str, Any], table: str, out_dir: Path, name: str) -> None:
    """<name>.json (every number) and <name>.md (the table) in out_dir; prints the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(table + "\n")
    print(table)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize_runs(runs: list[RunRecord]) -> dict[str, Any]:
    """One cell of the table: several closed-loop runs (e.g. one per task) taken together."""
    requests = [request for run in runs for request in run.requests]
    wall = sum(run.wall_s for run in runs)
    tokens = sum(request.num_tokens for request in requests)
    forwards = sum(request.num_forwards for request in requests)
    batched = sum(run.batched_forwards for run in runs)
    latencies = [request.latency_s for request in requests]
    return {
        "num_requests": len(requests),
        "accuracy": sum(request.correct for request in requests) / max(1, len(requests)),
        "generated_tokens": tokens,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "forwards_per_token": forwards / tokens if tokens and forwards else None,
        "batched_forwards_per_token": batched / tokens if tokens and batched else None,
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_mean_s": statistics.fmean(latencies) if latencies else 0.0,
        "wall_s": wall,
    }


def accuracy_groups(per_task: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Mean accuracy of the single- and multi-answer tasks, and of every prompt of the suite."""

    def mean_of(tasks: tuple[str, ...]) -> float | None:
        values = [per_task[task]["accuracy"] for task in tasks if task in per_task]
        return sum(values) / len(values) if values else None

    prompts = sum(cell["num_requests"] for cell in per_task.values())
    correct = sum(cell["accuracy"] * cell["num_requests"] for cell in per_task.values())
    return {
        "single_answer": mean_of(SINGLE_ANSWER_TASKS),
        "multi_answer": mean_of(MULTI_ANSWER_TASKS),
        "whole_suite": correct / prompts if prompts else None,
    }


def multi_answer_cell(result: dict[str, Any], concurrency: str) -> dict[str, Any] | None:
    """Accuracy, tokens/s and forwards/token over the multi-answer tasks alone (tokens / summed wall time):
    the speed axis on which the decoders' trade-off on dependent tokens is compared."""
    cells = [
        result["per_task"][task].get(concurrency) for task in MULTI_ANSWER_TASKS if task in result["per_task"]
    ]
    cells = [cell for cell in cells if cell]
    if not cells:
        return None
    tokens = sum(cell["generated_tokens"] for cell in cells)
    wall = sum(cell["wall_s"] for cell in cells)
    forwards = [
        cell["forwards_per_token"] * cell["generated_tokens"] for cell in cells if cell["forwards_per_token"]
    ]
    return {
        "accuracy": result["accuracy"]["multi_answer"],
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "forwards_per_token": sum(forwards) / tokens if tokens and forwards else None,
    }


def add_ratios(policies: dict[str, dict[str, Any]]) -> None:
    """Speed ratios and accuracy deltas of every policy against the reference, per concurrency."""
    reference = policies.get(REFERENCE_POLICY)
    if reference is None:
        return
    for result in policies.values():
        ratios = {}
        for concurrency, cell in result["overall"].items():
            base = reference["overall"].get(concurrency)
            if not base:
                continue
            ratios[concurrency] = {
                "tokens_per_s": cell["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] else None,
                "latency_p50": cell["latency_p50_s"] / base["latency_p50_s"]
                if base["latency_p50_s"]
                else None,
                "forwards_per_token": (
                    cell["forwards_per_token"] / base["forwards_per_token"]
                    if cell["forwards_per_token"] and base["forwards_per_token"]
                    else None
                ),
            }
        result["vs_reference"] = {
            "speed": ratios,
            "accuracy_delta": {
                group: (value - reference["accuracy"][group])
                if value is not None and reference["accuracy"][group] is not None
                else None
                for group, value in result["accuracy"].items()
            },
        }


def plot_accuracy_vs_speed(results: dict[str, Any], path: Path, concurrency: str) -> None:
    """Top row, one panel per model and transport: every policy a point at (tokens/s, accuracy).
    Bottom row, one panel per model (engine): multi-answer accuracy vs tokens/s with each sweep of
    settings["curves"] (threshold τ, APD R) drawn as a line, so the two trade-offs can be compared."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (f"{model} ({transport})", policies)
        for model, transports in results["models"].items()
        for transport, policies in transports.items()
        if policies
    ]
    if not panels:
        return
    curves = results.get("settings", {}).get("curves", {})
    curve_panels = [
        (model, transports["engine"])
        for model, transports in results["models"].items()
        if transports.get("engine")
    ]
    rows = 2 if curves and curve_panels else 1
    columns = max(len(panels), len(curve_panels) if rows == 2 else 0)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.5 * rows), squeeze=False)
    for axis, (title, policies) in zip(axes[0], panels, strict=False):
        _scatter_panel(axis, title, policies, concurrency)
    if rows == 2:
        for axis, (model, policies) in zip(axes[1], curve_panels, strict=False):
            _curve_panel(axis, model, policies, curves, concurrency)
    for axis in axes.flat:
        if not axis.has_data():
            axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _scatter_panel(axis: Any, title: str, policies: dict[str, Any], concurrency: str) -> None:
    for index, (name, result) in enumerate(policies.items()):
        cell = result["overall"].get(concurrency)
        if not cell:
            continue
        for group, marker in (("single_answer", "o"), ("multi_answer", "^")):
            accuracy = result["accuracy"].get(group)
            if accuracy is None:
                continue
            axis.scatter(cell["tokens_per_s"], accuracy, marker=marker, color=f"C{index % 10}")
            axis.annotate(
                name if group == "single_answer" else "",
                (cell["tokens_per_s"], accuracy),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    axis.set_title(f"{title}, concurrency {concurrency}")
    axis.set_xlabel("generated tokens/s")
    axis.set_ylabel("accuracy (o single-answer, ^ multi-answer)")
    axis.set_ylim(-0.05, 1.05)
    axis.grid(alpha=0.3)


def _curve_panel(
    axis: Any, model: str, policies: dict[str, Any], curves: dict[str, list[str]], concurrency: str
) -> None:
    points_of = {name: multi_answer_cell(result, concurrency) for name, result in policies.items()}
    for index, (curve, names) in enumerate(curves.items()):
        points = sorted(
            (points_of[name]["tokens_per_s"], points_of[name]["accuracy"], name)
            for name in names
            if points_of.get(name)
        )
        if not points:
            continue
        speeds, accuracies, _ = zip(*points, strict=True)
        axis.plot(speeds, accuracies, marker="o", color=f"C{index}", label=curve)
        for speed, accuracy, label in points:
            axis.annotate(label, (speed, accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    on_curves = {name for names in curves.values() for name in names} | {REFERENCE_POLICY}
    for name, point in points_of.items():
        if name in on_curves or not point:
            continue
        axis.scatter(point["tokens_per_s"], point["accuracy"], marker="x", color="grey")
        axis.annotate(
            name,
            (point["tokens_per_s"], point["accuracy"]),
            fontsize=6,
            color="grey",
            xytext=(3, -8),
            textcoords="offset points",
        )
    reference = points_of.get(REFERENCE_POLICY)
    if reference:
        axis.scatter(
            reference["tokens_per_s"],
            reference["accuracy"],
            marker="s",
            color="black",
            label=REFERENCE_POLICY,
        )
    axis.set_title(f"{model} (engine): multi-answer tasks, concurrency {concurrency}")
    axis.set_xlabel("generated tokens/s on the multi-answer tasks")
    axis.set_ylabel("multi-answer accuracy")
    axis.set_ylim(-0.05, 1.05)
    axis.grid(alpha=0.3)
    if axis.has_data():
        axis.legend(fontsize=8)


def multi_answer_table(results: dict[str, Any], concurrency: str) -> str:
    """The engine rows on the multi-answer tasks alone, at one request at a time and at `concurrency`."""
    lines = [
        f"| model | policy | multi-answer acc | tok/s on them (c=1) | tok/s on them (c={concurrency}) "
        "| forwards/token on them |",
        "|---|---|---|---|---|---|",
    ]
    for model, transports in results["models"].items():
        for name, result in transports.get("engine", {}).items():
            single, top = multi_answer_cell(result, "1"), multi_answer_cell(result, concurrency)
            if not single or not top:
                continue
            lines.append(
                f"| {model} | {name} | {_fmt(top['accuracy'])} | {single['tokens_per_s']:.1f} "
                f"| {top['tokens_per_s']:.1f} | {_fmt(top['forwards_per_token'], '{:.2f}')} |"
            )
    return "\n".join(lines)


MULTI_ANSWER_HEADING = "Multi-answer tasks alone (the x axis of the plot's curves):"


def markdown_table(results: dict[str, Any], concurrency: str) -> str:
    lines = [
        f"| model | transport | policy | single-answer acc | multi-answer acc | suite acc "
        f"| tok/s (c={concurrency}) | × ref tok/s | tok/s c={concurrency} ÷ c=1 | forwards/token "
        "| p50 / p95 latency (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, transports in results["models"].items():
        for transport, policies in transports.items():
            for name, result in policies.items():
                cell = result["overall"].get(concurrency)
                if not cell:
                    continue
                speed = result.get("vs_reference", {}).get("speed", {}).get(concurrency, {})
                ratio = speed.get("tokens_per_s")
                fpt = cell["forwards_per_token"]
                lines.append(
                    f"| {model} | {transport} | {name} | {_fmt(result['accuracy']['single_answer'])} "
                    f"| {_fmt(result['accuracy']['multi_answer'])} "
                    f"| {_fmt(result['accuracy'].get('whole_suite'), '{:.3f}')} | {cell['tokens_per_s']:.1f} "
                    f"| {_fmt(ratio, '{:.2f}×')} | {_fmt(_scaling(result, concurrency), '{:.2f}×')} "
                    f"| {_fmt(fpt, '{:.2f}')} "
                    f"| {cell['latency_p50_s']:.3f} / {cell['latency_p95_s']:.3f} |"
                )
    return "\n".join(lines)


def _scaling(result: dict[str, Any], concurrency: str) -> float | None:
    """Aggregate tokens/s at this concurrency over tokens/s one request at a time."""
    single = result["overall"].get("1")
    cell = result["overall"].get(concurrency)
    if not single or not cell or not single["tokens_per_s"]:
        return None
    return cell["tokens_per_s"] / single["tokens_per_s"]


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "–" if value is None else pattern.format(value)


def write_report(results: dict[str, Any], json_path: Path) -> str:
    """The plot (.png) and the tables (.md) next to a results JSON; returns the tables."""
    top = str(max(results["settings"]["concurrency"]))
    plot_accuracy_vs_speed(results, json_path.with_suffix(".png"), top)
    tables = f"{markdown_table(results, top)}\n\n{MULTI_ANSWER_HEADING}\n\n{multi_answer_table(results, top)}"
    json_path.with_suffix(".md").write_text(tables + "\n")
    return tables


def main(argv: list[str] | None = None) -> None:
    """Re-draw the plot and the tables of a results JSON (python -m bench.report bench/results/full.json)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    print(write_report(json.loads(args.results.read_text()), args.results))


if __name__ == "__main__":
    main()
