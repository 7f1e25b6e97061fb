"""Every Prometheus metric vdiff exposes: vLLM's names, labels (model_name, engine), help texts and buckets
(vLLM 0.33.0, vllm/v1/metrics/loggers.py and buckets.py), plus diffusion extras under vdiff:.

One ServerMetrics per app, each with its own CollectorRegistry, so several servers can live in one process.
Per-request series are observed by the HTTP layer (serving_base); engine-wide series (queues, token
counters, per-step histograms, APD drafts) are read from the engine's latest stats snapshot at scrape time.
See docs/metrics.md for what each metric means for a diffusion model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator

from vdiff.engine.outputs import RequestOutput
from vdiff.engine.stats import EngineStatsSnapshot, HistogramSnapshot

# vLLM's bucket families (vllm/v1/metrics/buckets.py).
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                               5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
INTER_TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
REQUEST_PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
STEP_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_MAX_MODEL_LEN = 4096
"""Cap of the token-count buckets when the engine does not report its max_model_len."""

ENGINE_INDEX = "0"
"""vLLM's `engine` label: the engine-core index (vdiff runs one engine per server)."""
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
"""vLLM's FinishReason strings; every one is exposed (at zero) from the start, as vLLM does."""
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
HTTP_EXCLUDED_HANDLERS = ["/metrics", "/health", "/load", "/ping", "/version", "/server_info"]
"""As vLLM's instrumentator (vllm/entrypoints/serve/instrumentator/metrics.py)."""
CACHE_CONFIG_FIELDS = (
    "block_size", "user_specified_block_size", "kv_cache_layout", "prefix_match_unit",
    "gpu_memory_utilization", "cache_dtype", "is_attention_free", "num_gpu_blocks_override",
    "sliding_window", "enable_prefix_caching", "prefix_caching_hash_algo",
    "prefix_cache_retention_interval", "kv_cache_dtype_skip_layers", "mamba_page_size_padded",
    "skip_page_size_padded", "mamba_block_size", "mamba_cache_dtype", "mamba_ssm_cache_dtype",
    "mamba_cache_mode", "enable_mamba_shared_prefix_checkpoint", "replayssm_buffer_len",
    "use_replayssm", "use_kda_recoverssm", "num_gpu_blocks", "num_cpu_blocks",
    "simple_cpu_offload_num_blocks", "effective_attention_block_size", "kv_cache_size_tokens",
    "kv_cache_max_concurrency", "hash_block_size", "cache_hit_alignment_tokens",
    "kv_sharing_fast_prefill", "swa_bounded_replay", "kv_cache_memory_bytes", "kv_offloading_size",
    "kv_offloading_backend",
)  # fmt: skip
"""The label names of vllm:cache_config_info: vLLM 0.33.0's CacheConfig fields (vllm/config/cache.py)."""

CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()  # like vLLM: no *_created series next to every counter and histogram


def build_1_2_5_buckets(max_value: int) -> list[float]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to max_value (buckets.build_1_2_5_buckets)."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return buckets
            buckets.append(value)
        exponent += 1


@dataclass(slots=True)
class FinishedRequest:
    """What the HTTP layer knows about a request once it has finished.

    arrival/finished/first_token times are time.monotonic() at the HTTP layer; the engine's phase times
    (queue, prefill, decode) come from final_output.stats (time.time() on the engine thread)."""

    arrival_time: float
    finished_time: float
    num_prompt_tokens: int
    max_tokens: int
    n: int
    first_token_time: float | None
    final_output: RequestOutput | None
    finished_reason: str | None = None
    """Set when there is no final output (aborted or failed before the first one): 'abort' or 'error'."""
    last_advance_wall_time: float | None = None
    """time.time() when the last frontier advance reached the HTTP layer (decode end of an unfinished one)."""
    token_latencies: list[float] = field(default_factory=list)
    """Unused (inter-token latencies are observed as they happen); kept for callers that still pass it."""


class ServerMetrics:
    """All metric families of one server, labelled with its first served model name and engine "0"."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.model_name = model_name
        self.labels = {"model_name": model_name, "engine": ENGINE_INDEX}
        self.snapshot: Callable[[], EngineStatsSnapshot | None] = lambda: None
        self.cache_config: dict[str, str] | None = None
        reg = self.registry
        names = ["model_name", "engine"]

        def histogram(name: str, doc: str, buckets: Iterable[float]) -> Histogram:
            return Histogram(name, doc, names, buckets=tuple(buckets), registry=reg)

        self.request_success = Counter(
            "vllm:request_success", "Count of successfully processed requests.", [*names, "finished_reason"],
            registry=reg,
        )  # fmt: skip
        self.time_to_first_token = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            TIME_TO_FIRST_TOKEN_BUCKETS,
        )  # fmt: skip
        self.inter_token_latency = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
            INTER_TOKEN_LATENCY_BUCKETS,
        )  # fmt: skip
        self.time_per_output_token = histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.DEPRECATED: Use vllm:inter_token_latency_seconds "
            "instead.",
            INTER_TOKEN_LATENCY_BUCKETS,
        )
        self.request_time_per_output_token = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.", INTER_TOKEN_LATENCY_BUCKETS,
        )  # fmt: skip
        self.e2e_request_latency = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
        )  # fmt: skip
        self.request_queue_time = histogram(
            "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )  # fmt: skip
        self.request_inference_time = histogram(
            "vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )  # fmt: skip
        self.request_prefill_time = histogram(
            "vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )  # fmt: skip
        self.request_decode_time = histogram(
            "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )  # fmt: skip
        self.request_params_n = histogram(
            "vllm:request_params_n", "Histogram of the n request parameter.", REQUEST_PARAMS_N_BUCKETS
        )
        self.forward_passes_per_request = histogram(
            "vdiff:forward_passes_per_request", "Model forward passes the request took part in.",
            STEP_COUNT_BUCKETS,
        )  # fmt: skip
        self.denoising_steps_per_request = histogram(
            "vdiff:denoising_steps_per_request", "Denoising steps (unmasking rounds) of the request.",
            STEP_COUNT_BUCKETS,
        )  # fmt: skip
        # Per API key, by the key's name (never the key): entrypoints/rate_limit.py counts them.
        self.requests_by_key = Counter(
            "vdiff:requests_by_key", "Requests authenticated with each API key (by key name; 'anonymous' "
            "when the server has no keys).", ["model_name", "key_name"], registry=reg,
        )  # fmt: skip
        self.rate_limited = Counter(
            "vdiff:rate_limited", "Requests refused with 429 by a per-key rate limit (limit: requests or "
            "tokens).", ["model_name", "key_name", "limit"], registry=reg,
        )  # fmt: skip
        self.generation_listeners: list[Callable[[int], None]] = []
        """Called with a finished request's generated tokens (all choices), in the request's context."""
        self._token_histograms: dict[str, Histogram] = {}
        self.engine_collector = EngineCollector(self)
        reg.register(self.engine_collector)
        # Process metrics, as on prometheus_client's default registry that vLLM serves.
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        self._touch_labelled_children()

    def _touch_labelled_children(self) -> None:
        """Create each child now so every family is exposed (at zero) before the first request."""
        for family in (
            self.time_to_first_token, self.inter_token_latency, self.time_per_output_token,
            self.request_time_per_output_token, self.e2e_request_latency, self.request_queue_time,
            self.request_inference_time, self.request_prefill_time, self.request_decode_time,
            self.request_params_n, self.forward_passes_per_request, self.denoising_steps_per_request,
        ):  # fmt: skip
            family.labels(**self.labels)
        for reason in FINISH_REASONS:
            self.request_success.labels(**self.labels, finished_reason=reason)

    # Binding to the engine (api_server: bind_engine_stats).
    def bind_engine(
        self,
        snapshot: Callable[[], EngineStatsSnapshot | None],
        max_model_len: int | None,
        cache_config: dict[str, str] | None = None,
    ) -> None:
        """Read the engine-wide series from `snapshot` at scrape time; size the token buckets like vLLM."""
        self.snapshot = snapshot
        self.cache_config = cache_config
        self._make_token_histograms(max_model_len)

    def _make_token_histograms(self, max_model_len: int | None) -> None:
        if self._token_histograms:
            return
        buckets = build_1_2_5_buckets(max_model_len or DEFAULT_MAX_MODEL_LEN)
        for key, name, doc in (
            ("prompt", "vllm:request_prompt_tokens", "Number of prefill tokens processed."),
            ("generation", "vllm:request_generation_tokens", "Number of generation tokens processed."),
            ("max_generation", "vllm:request_max_num_generation_tokens",
             "Histogram of maximum number of requested generation tokens."),
            ("max_tokens", "vllm:request_params_max_tokens",
             "Histogram of the max_tokens request parameter."),
        ):  # fmt: skip
            family = Histogram(name, doc, ["model_name", "engine"], buckets=buckets, registry=self.registry)
            family.labels(**self.labels)
            self._token_histograms[key] = family

    def token_histogram(self, key: str) -> Histogram:
        self._make_token_histograms(None)
        return self._token_histograms[key]

    # Observations from the HTTP layer.
    def record_first_token(self, seconds: float) -> None:
        self.time_to_first_token.labels(**self.labels).observe(seconds)

    def record_inter_token(self, seconds_per_token: float, num_tokens: int) -> None:
        """One frontier advance after the first: its delay divided over the tokens it committed."""
        itl = self.inter_token_latency.labels(**self.labels)
        legacy = self.time_per_output_token.labels(**self.labels)
        for _ in range(num_tokens):
            itl.observe(seconds_per_token)
            legacy.observe(seconds_per_token)

    def record_finished(self, request: FinishedRequest) -> None:
        labels = self.labels
        output = request.final_output
        n = request.n
        self.token_histogram("prompt").labels(**labels).observe(request.num_prompt_tokens)
        self.token_histogram("max_tokens").labels(**labels).observe(request.max_tokens)
        self.request_params_n.labels(**labels).observe(n)
        self.e2e_request_latency.labels(**labels).observe(
            max(0.0, request.finished_time - request.arrival_time)
        )
        if output is None:
            reason = request.finished_reason or "abort"
            self.request_success.labels(**labels, finished_reason=reason).inc(n)
            self.token_histogram("generation").labels(**labels).observe(0)
            self.token_histogram("max_generation").labels(**labels).observe(0)
            self.request_time_per_output_token.labels(**labels).observe(0)
            return
        per_choice = [len(choice.token_ids) for choice in output.outputs]
        self.token_histogram("generation").labels(**labels).observe(sum(per_choice))
        for listener in self.generation_listeners:
            listener(sum(per_choice))
        longest = max(per_choice, default=0)
        self.token_histogram("max_generation").labels(**labels).observe(longest)
        for choice in output.outputs:  # unfinished choices: the client went away (abort) or it failed
            reason = choice.finish_reason or request.finished_reason or "abort"
            self.request_success.labels(**labels, finished_reason=reason).inc()
        stats = output.stats
        scheduled, first_token = stats.scheduled_time, stats.first_token_time
        last_token = (
            stats.finished_time if stats.finished_time is not None else request.last_advance_wall_time
        )
        if scheduled is not None and stats.arrival_time:
            self.request_queue_time.labels(**labels).observe(max(0.0, scheduled - stats.arrival_time))
        decode_time = 0.0
        if scheduled is not None and first_token is not None:
            self.request_prefill_time.labels(**labels).observe(max(0.0, first_token - scheduled))
            if last_token is not None:
                decode_time = max(0.0, last_token - first_token)
                self.request_decode_time.labels(**labels).observe(decode_time)
                self.request_inference_time.labels(**labels).observe(max(0.0, last_token - scheduled))
        tpot = decode_time / (longest - 1) if longest > 1 else 0.0
        self.request_time_per_output_token.labels(**labels).observe(tpot)
        self.forward_passes_per_request.labels(**labels).observe(stats.num_forwards)
        self.denoising_steps_per_request.labels(**labels).observe(stats.num_denoising_steps)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EngineCollector(Collector):
    """Engine-wide series read from the engine's latest stats snapshot at scrape time (thread-safe)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return self._families(EngineStatsSnapshot())

    def collect(self) -> Iterator[Metric]:
        return self._families(self.metrics.snapshot() or EngineStatsSnapshot())

    def _families(self, snap: EngineStatsSnapshot) -> Iterator[Metric]:
        names = ["model_name", "engine"]
        values = [self.metrics.model_name, ENGINE_INDEX]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def histogram(name: str, doc: str, hist: HistogramSnapshot) -> HistogramMetricFamily:
            family = HistogramMetricFamily(name, doc, labels=names)
            cumulative, buckets = 0, []
            for bound, count in zip(hist.bounds, hist.bucket_counts, strict=True):
                cumulative += count
                buckets.append((_bound_text(bound), cumulative))
            buckets.append(("+Inf", hist.count))
            family.add_metric(values, buckets, hist.total)
            return family

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                    snap.num_running_seqs)  # fmt: skip
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                    snap.num_waiting_seqs)  # fmt: skip
        yield gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", snap.kv_cache_usage
        )
        sleep = GaugeMetricFamily(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
            "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            labels=[*names, "sleep_state"],
        )
        for state in SLEEP_STATES:
            sleep.add_metric([*values, state], 1.0 if state == "awake" else 0.0)
        yield sleep
        yield self._cache_config_info(snap)
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
                      snap.num_preemptions)  # fmt: skip
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", snap.num_prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.",
                      snap.num_generation_tokens)  # fmt: skip
        yield histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
                        snap.iteration_tokens)  # fmt: skip
        yield counter("vllm:spec_decode_num_drafts", "Number of spec decoding drafts.", snap.num_spec_drafts)
        yield counter(
            "vllm:spec_decode_num_draft_tokens", "Number of draft tokens.", snap.num_spec_draft_tokens
        )
        yield counter("vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens.",
                      snap.num_spec_accepted_tokens)  # fmt: skip
        per_pos = CounterMetricFamily(
            "vllm:spec_decode_num_accepted_tokens_per_pos", "Accepted tokens per draft position.",
            labels=[*names, "position"],
        )  # fmt: skip
        for position, count in enumerate(snap.num_spec_accepted_per_position):
            per_pos.add_metric([*values, str(position)], count)
        yield per_pos
        yield counter("vdiff:engine_steps", "Engine steps (batched forwards).", snap.num_steps)
        # vLLM's own diffusion (dLLM) counters (vllm/v1/spec_decode/metrics.py, is_diffusion).
        yield counter(
            "vllm:diffusion_num_denoising_steps", "Number of denoising steps.", snap.num_denoising_steps
        )
        yield counter("vllm:diffusion_num_committed_tokens", "Number of committed (finalized) tokens.",
                      snap.num_committed_tokens)  # fmt: skip
        yield histogram("vdiff:tokens_committed_per_step",
                        "Tokens committed by one engine step, over every sequence in the batch.",
                        snap.tokens_committed_per_step)  # fmt: skip
        yield histogram("vdiff:batch_size", "Sequences sharing one engine forward pass.", snap.batch_size)

    def _cache_config_info(self, snap: EngineStatsSnapshot) -> GaugeMetricFamily:
        info = cache_config_labels(snap, self.metrics.cache_config)
        family = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", labels=[*info, "engine"]
        )
        family.add_metric([*info.values(), ENGINE_INDEX], 1.0)
        return family


def cache_config_labels(snap: EngineStatsSnapshot, overrides: dict[str, str] | None) -> dict[str, str]:
    """vLLM's CacheConfig fields as vdiff has them: block_size and num_gpu_blocks of the cache budget
    (engine/block_manager.py), no prefix cache; the rest 'None'."""
    info = dict.fromkeys(CACHE_CONFIG_FIELDS, "None")
    info |= {
        "block_size": str(snap.block_size), "num_gpu_blocks": str(snap.num_gpu_blocks),
        "user_specified_block_size": "False", "cache_dtype": "auto",
        "is_attention_free": "False", "enable_prefix_caching": "False", "kv_cache_dtype_skip_layers": "[]",
        "kv_sharing_fast_prefill": "False",
    }  # fmt: skip
    info |= overrides or {}
    return info


def _bound_text(bound: float) -> str:
    return repr(float(bound))


def instrument_app(app: FastAPI) -> None:
    """vLLM's HTTP metrics (prometheus-fastapi-instrumentator: http_requests_total,
    http_request_duration_seconds, http_request_duration_highr_seconds, http_request_size_bytes,
    http_response_size_bytes) on a registry of this app, served by /metrics with the rest."""
    registry = CollectorRegistry()
    Instrumentator(excluded_handlers=HTTP_EXCLUDED_HANDLERS, registry=registry).add().instrument(app)
    app.state.vdiff_http_metrics = registry


def http_metrics_registry(app: FastAPI) -> CollectorRegistry | None:
    return getattr(app.state, "vdiff_http_metrics", None)
