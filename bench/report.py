"""Aggregate benchmark runs: accuracy, tokens/s, forwards per token, latency percentiles, ratios, plot."""

from __future__ import annotations

import json
import re
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


POLICY_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("reference", "black", "s"),
    ("fixed k per step", "tab:gray", "X"),
    ("threshold τ", "tab:blue", "o"),
    ("threshold factor", "tab:purple", "D"),
    ("threshold + KV cache", "tab:green", "^"),
    ("block (exact block cache)", "tab:red", "P"),
    ("APD R", "tab:orange", "v"),
)
"""(legend label, colour, marker) of each family of policies the plot draws as one series."""


def policy_family(name: str) -> str:
    """The plot's series of a policy name of bench/policies.py."""
    if name == REFERENCE_POLICY:
        return "reference"
    if name.startswith("block"):
        return "block (exact block cache)"
    if name.startswith("apd"):
        return "APD R"
    if name.startswith("fixed"):
        return "fixed k per step"
    if name.startswith("factor"):
        return "threshold factor"
    if "-prefix-cache" in name or "-dual-cache" in name:
        return "threshold + KV cache"
    return "threshold τ"


def short_label(name: str) -> str:
    """A point's label inside its family: the swept value (τ, R) and what else differs."""
    label = re.sub(r"^(block-threshold|threshold|apd|factor)-", "", name)
    label = label.replace("block-4-per-step", "k=4")
    label = label.replace("-dual-cache-vicinity-", " dual v").replace("-dual-cache", " dual")
    label = (
        label.replace("-prefix-cache", " prefix")
        .replace("-no-cache-", " ")
        .replace("-large-verifier", " large")
    )
    return "" if name == REFERENCE_POLICY else label.replace("fixed-4-per-step", "k=4")


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats on both tokens/s and accuracy, by increasing tokens/s."""
    front = [
        p
        for p in points
        if not any(q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in points)
    ]
    return sorted(front)


def plot_accuracy_vs_speed(results: dict[str, Any], path: Path, concurrency: str) -> None:
    """One row per model; columns: single-answer and multi-answer accuracy against tokens/s, for the engine
    and then over HTTP. Each panel holds one series per policy family (POLICY_FAMILIES, one legend for
    the figure): its points, labelled by the swept value, and its accuracy-vs-tokens/s frontier as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    models = [model for model, transports in results["models"].items() if any(transports.values())]
    if not models:
        return
    transports = [t for t in ("engine", "http") if any(results["models"][m].get(t) for m in models)]
    columns = [(transport, group) for transport in transports for group in ("single_answer", "multi_answer")]
    figure, axes = plt.subplots(
        len(models), len(columns), figsize=(4.6 * len(columns), 4.0 * len(models) + 0.8), squeeze=False
    )
    for row, model in enumerate(models):
        for column, (transport, group) in enumerate(columns):
            policies = results["models"][model].get(transport) or {}
            _family_panel(axes[row][column], policies, group, concurrency)
            what = "single-answer" if group == "single_answer" else "multi-answer"
            axes[row][column].set_title(f"{model}, {transport}: {what} tasks", fontsize=10)
    handles = [
        Line2D(
            [], [], color=colour, marker=marker, linestyle="-" if label != "reference" else "", label=label
        )
        for label, colour, marker in POLICY_FAMILIES
    ]
    figure.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, fontsize=9)
    figure.suptitle(
        f"accuracy vs generated tokens/s (concurrency {concurrency}); lines: each family's frontier",
        y=0.995 - 0.5 / figure.get_figheight(),
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.8 / figure.get_figheight()))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _family_panel(axis: Any, policies: dict[str, Any], group: str, concurrency: str) -> None:
    by_family: dict[str, list[tuple[float, float, str]]] = {}
    for name, result in policies.items():
        if group == "multi_answer":
            cell = multi_answer_cell(result, concurrency)
            accuracy = cell["accuracy"] if cell else None
        else:
            cell = result["overall"].get(concurrency)
            accuracy = result["accuracy"].get(group)
        if not cell or accuracy is None:
            continue
        by_family.setdefault(policy_family(name), []).append((cell["tokens_per_s"], accuracy, name))
    for family, (label, colour, marker) in enumerate(POLICY_FAMILIES):
        points = by_family.get(label, [])
        if not points:
            continue
        speeds, accuracies, _ = zip(*points, strict=True)
        axis.scatter(speeds, accuracies, color=colour, marker=marker, s=36, zorder=3)
        front = pareto_front(points)
        if len(front) > 1:
            axis.plot([p[0] for p in front], [p[1] for p in front], color=colour, linewidth=1.4, zorder=2)
        for speed, accuracy, name in front:
            axis.annotate(
                short_label(name),
                (speed, accuracy),
                fontsize=7,
                color=colour,
                xytext=(4, -10 - 7 * family if accuracy > 0.9 else 4),  # near 1.0: one line per family
                textcoords="offset points",
            )
    axis.set_xlabel("generated tokens/s" + (" on these tasks" if group == "multi_answer" else " (all tasks)"))
    axis.set_ylabel("accuracy")
    axis.set_ylim(-0.05, 1.05)
    axis.grid(alpha=0.3)


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


def reference_note(results: dict[str, Any]) -> str:
    """What each model's `reference` row (the baseline of "× ref tok/s") decodes with."""
    block = [m for m in results["models"] if m in results.get("block_diffusion_models", [])]
    others = [m for m in results["models"] if m not in block]
    parts = []
    if others:
        parts.append(f"for {', '.join(others)} the family's reference decoder, one token per step")
    if block:
        overrides = results["settings"].get("policies_on_block_diffusion_models", {}).get(REFERENCE_POLICY)
        parts.append(
            f"for {', '.join(block)} (block diffusion) the block policy at one token per step per block "
            f"with the exact block cache ({', '.join(f'{k} {v}' for k, v in (overrides or {}).items())})"
        )
    return (
        "× ref tok/s: tokens/s over the same model and transport's `reference` row of this run: "
        + "; ".join(parts)
        + "."
    )


def write_report(results: dict[str, Any], json_path: Path) -> str:
    """The plot (.png) and the tables (.md) next to a results JSON; returns the tables."""
    top = str(max(results["settings"]["concurrency"]))
    plot_accuracy_vs_speed(results, json_path.with_suffix(".png"), top)
    tables = (
        f"{reference_note(results)}\n\n{markdown_table(results, top)}"
        f"\n\n{MULTI_ANSWER_HEADING}\n\n{multi_answer_table(results, top)}"
    )
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
