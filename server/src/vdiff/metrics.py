"""Every Prometheus metric vdiff exposes: vLLM's names (label model_name) plus diffusion extras under vdiff:.

One ServerMetrics per app, each with its own CollectorRegistry, so several servers can live in one process.
See docs/metrics.md for what each metric means for a diffusion model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from vdiff.engine.outputs import RequestOutput

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
TOKEN_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                         1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
TOKEN_COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
STEP_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()  # like vLLM: no *_created series next to every counter and histogram


@dataclass(slots=True)
class SchedulerSnapshot:
    """What the engine reports about its queues at scrape time."""

    num_running: int
    num_waiting: int


@dataclass(slots=True)
class MetricTotals:
    """Plain running totals for the periodic stats log line (prometheus children are write-only)."""

    generation_tokens: int = 0
    snapshot: Callable[[], SchedulerSnapshot] = lambda: SchedulerSnapshot(0, 0)

    def num_running(self) -> int:
        return self.snapshot().num_running

    def num_waiting(self) -> int:
        return self.snapshot().num_waiting


@dataclass(slots=True)
class StepStats:
    """One engine step: how many sequences shared the forward pass and how many tokens they committed."""

    batch_size: int
    num_tokens_committed: float


@dataclass(slots=True)
class FinishedRequest:
    """What the HTTP layer knows about a request once it has finished (times from time.monotonic())."""

    arrival_time: float
    finished_time: float
    num_prompt_tokens: int
    max_tokens: int
    n: int
    first_token_time: float | None
    token_latencies: list[float]
    """Per-token share of the time between frontier advances (see inter_token_latency in docs/metrics.md)."""
    final_output: RequestOutput | None


class ServerMetrics:
    """All metric families of one server, labelled with its first served model name."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.model_name = model_name
        self.totals = MetricTotals()
        reg = self.registry
        label = ["model_name"]

        self.num_requests_running = Gauge(
            "vllm:num_requests_running", "Sequences in the running batch.", label, registry=reg
        )
        self.num_requests_waiting = Gauge(
            "vllm:num_requests_waiting", "Sequences waiting to be scheduled.", label, registry=reg
        )
        self.request_success = Counter(
            "vllm:request_success",
            "Finished generations, by finish reason (stop, length, abort).",
            [*label, "finished_reason"],
            registry=reg,
        )
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed.", label, registry=reg)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generated (committed) tokens.", label, registry=reg
        )
        self.time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Arrival to the first committed token streamed.",
            label,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inter_token_latency = Histogram(
            "vllm:inter_token_latency_seconds",
            "Time between commit-frontier advances divided by the tokens each advance commits.",
            label,
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=reg,
        )
        self.e2e_request_latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Arrival to the last token of the request.",
            label,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.request_queue_time = Histogram(
            "vllm:request_queue_time_seconds",
            "Time a request spent in the waiting queue.",
            label,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.request_prompt_tokens = Histogram(
            "vllm:request_prompt_tokens", "Prompt tokens per request.", label, buckets=TOKEN_COUNT_BUCKETS,
            registry=reg,
        )  # fmt: skip
        self.request_generation_tokens = Histogram(
            "vllm:request_generation_tokens",
            "Generated tokens per request (all n generations).",
            label,
            buckets=TOKEN_COUNT_BUCKETS,
            registry=reg,
        )
        self.request_params_max_tokens = Histogram(
            "vllm:request_params_max_tokens", "max_tokens per request.", label, buckets=TOKEN_COUNT_BUCKETS,
            registry=reg,
        )  # fmt: skip
        self.request_params_n = Histogram(
            "vllm:request_params_n", "n per request.", label, buckets=(1, 2, 5, 10, 20), registry=reg
        )
        self.forward_passes_per_request = Histogram(
            "vdiff:forward_passes_per_request",
            "Model forward passes the request took part in.",
            label,
            buckets=STEP_COUNT_BUCKETS,
            registry=reg,
        )
        self.denoising_steps_per_request = Histogram(
            "vdiff:denoising_steps_per_request",
            "Denoising steps (unmasking rounds) of the request.",
            label,
            buckets=STEP_COUNT_BUCKETS,
            registry=reg,
        )
        self.tokens_committed_per_step = Histogram(
            "vdiff:tokens_committed_per_step",
            "Tokens committed by one engine step, over every sequence in the batch.",
            label,
            buckets=TOKEN_COUNT_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            "vdiff:batch_size",
            "Sequences sharing one engine forward pass.",
            label,
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self.engine_steps = Counter(
            "vdiff:engine_steps", "Engine steps (batched forwards).", label, registry=reg
        )
        self.spec_decode_num_drafts = Counter(
            "vllm:spec_decode_num_drafts", "APD drafts the verifier checked.", label, registry=reg
        )
        self.spec_decode_num_draft_tokens = Counter(
            "vllm:spec_decode_num_draft_tokens",
            "Drafted tokens beyond the frontier token of each APD draft.",
            label,
            registry=reg,
        )
        self.spec_decode_num_accepted_tokens = Counter(
            "vllm:spec_decode_num_accepted_tokens",
            "Drafted tokens the verifier accepted.",
            label,
            registry=reg,
        )
        self.spec_decode_num_accepted_tokens_per_pos = Counter(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            "Drafts whose token at this position beyond the frontier token was accepted.",
            [*label, "position"],
            registry=reg,
        )
        self._touch_labelled_children()

    def _touch_labelled_children(self) -> None:
        """Create each child now so every family is exposed (at zero) before the first request."""
        for family in (
            self.num_requests_running, self.num_requests_waiting, self.prompt_tokens, self.generation_tokens,
            self.time_to_first_token, self.inter_token_latency, self.e2e_request_latency,
            self.request_queue_time, self.request_prompt_tokens, self.request_generation_tokens,
            self.request_params_max_tokens, self.request_params_n, self.forward_passes_per_request,
            self.denoising_steps_per_request, self.tokens_committed_per_step, self.batch_size,
            self.engine_steps, self.spec_decode_num_drafts, self.spec_decode_num_draft_tokens,
            self.spec_decode_num_accepted_tokens,
        ):  # fmt: skip
            family.labels(model_name=self.model_name)
        for reason in ("stop", "length", "abort"):
            self.request_success.labels(model_name=self.model_name, finished_reason=reason)

    def bind_scheduler(self, snapshot: Callable[[], SchedulerSnapshot]) -> None:
        """Read the queue gauges from the engine at scrape time."""
        self.totals.snapshot = snapshot
        self.num_requests_running.labels(model_name=self.model_name).set_function(
            lambda: snapshot().num_running
        )
        self.num_requests_waiting.labels(model_name=self.model_name).set_function(
            lambda: snapshot().num_waiting
        )

    def record_steps(self, steps: Sequence[StepStats]) -> None:
        for step in steps:
            self.engine_steps.labels(model_name=self.model_name).inc()
            self.batch_size.labels(model_name=self.model_name).observe(step.batch_size)
            self.tokens_committed_per_step.labels(model_name=self.model_name).observe(
                step.num_tokens_committed
            )

    def record_drafts(
        self,
        num_drafts: int,
        num_draft_tokens: int,
        num_accepted_tokens: int,
        accepted_per_position: list[int],
    ) -> None:
        """Increments since the previous call (APD's speculative-decoding counters)."""
        name = self.model_name
        self.spec_decode_num_drafts.labels(model_name=name).inc(num_drafts)
        self.spec_decode_num_draft_tokens.labels(model_name=name).inc(num_draft_tokens)
        self.spec_decode_num_accepted_tokens.labels(model_name=name).inc(num_accepted_tokens)
        for position, count in enumerate(accepted_per_position):
            if count:
                self.spec_decode_num_accepted_tokens_per_pos.labels(
                    model_name=name, position=str(position)
                ).inc(count)

    def record_finished(self, request: FinishedRequest) -> None:
        name = self.model_name
        self.request_prompt_tokens.labels(model_name=name).observe(request.num_prompt_tokens)
        self.prompt_tokens.labels(model_name=name).inc(request.num_prompt_tokens)
        self.request_params_max_tokens.labels(model_name=name).observe(request.max_tokens)
        self.request_params_n.labels(model_name=name).observe(request.n)
        self.e2e_request_latency.labels(model_name=name).observe(request.finished_time - request.arrival_time)
        if request.first_token_time is not None:
            ttft = request.first_token_time - request.arrival_time
            self.time_to_first_token.labels(model_name=name).observe(ttft)
        itl = self.inter_token_latency.labels(model_name=name)
        for latency in request.token_latencies:
            itl.observe(latency)
        output = request.final_output
        if output is None:
            return
        num_generated = sum(len(choice.token_ids) for choice in output.outputs)
        self.generation_tokens.labels(model_name=name).inc(num_generated)
        self.totals.generation_tokens += num_generated
        self.request_generation_tokens.labels(model_name=name).observe(num_generated)
        for choice in output.outputs:
            reason = choice.finish_reason or "abort"
            self.request_success.labels(model_name=name, finished_reason=reason).inc()
        stats = output.stats
        if stats.scheduled_time is not None and stats.arrival_time:
            queue_time = max(0.0, stats.scheduled_time - stats.arrival_time)
            self.request_queue_time.labels(model_name=name).observe(queue_time)
        self.forward_passes_per_request.labels(model_name=name).observe(stats.num_forwards)
        self.denoising_steps_per_request.labels(model_name=name).observe(stats.num_denoising_steps)

    def render(self) -> bytes:
        return generate_latest(self.registry)
