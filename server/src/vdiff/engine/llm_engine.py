"""The synchronous engine: add requests, then step() = schedule -> one forward -> policies -> outputs.

Not thread-safe: one thread owns an LLMEngine (AsyncLLMEngine runs it in its own thread).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import torch

from vdiff.config import EngineConfig
from vdiff.engine.block_manager import BLOCK_SIZE, BlockManager
from vdiff.engine.cache_scheduler import CacheScheduler
from vdiff.engine.canvas_trace import CanvasTracer
from vdiff.engine.decoding import DecodingPolicy, PolicyContext, available_policies, get_policy_class
from vdiff.engine.decoding.constrained import FrontierMasks
from vdiff.engine.decoding.logits_processors import needs_processing, process_results
from vdiff.engine.input_processor import MAX_N, EngineRequest, InputProcessor
from vdiff.engine.logprobs import raw_logits, record_committed
from vdiff.engine.memory_budget import cache_budget_bytes, default_max_num_batched_tokens, kv_bytes_per_token
from vdiff.engine.model_runner import ModelRunner
from vdiff.engine.output_processor import OutputProcessor, supports_incremental_decoding
from vdiff.engine.outputs import RequestOutput
from vdiff.engine.prompt_scoring import PromptScorer
from vdiff.engine.request import Request
from vdiff.engine.scheduler import Scheduler
from vdiff.engine.sequence import Sequence, SequenceStatus, plan_blocks
from vdiff.engine.stats import EngineStats
from vdiff.engine.step_guard import StepGuard
from vdiff.errors import VdiffValidationError
from vdiff.knobs import KNOBS_BY_NAME
from vdiff.sampling_params import SamplingParams
from vdiff.structured.backend import create_backend

logger = logging.getLogger(__name__)

SEED_STRIDE = 1_000_003
"""Derived seeds of requests without a seed: engine seed * stride + counter (distinct per sequence)."""
SEED_MODULUS = 2**64
"""torch.Generator.manual_seed takes [0, 2**64): request seed + index wraps around."""


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        from vdiff.models.loader import load_model, resolve_model_path
        from vdiff.tokenizer import load_tokenizer

        self.config = config
        self.loaded = load_model(config)
        family = self.loaded.family
        if family.is_causal:
            raise VdiffValidationError(
                f"{config.model} is a causal LM ({family.name}); vdiff serves masked-diffusion models "
                "(use it as --draft-model for APD)",
                "model",
            )
        tokenizer_dir = resolve_model_path(config.tokenizer, config.revision) if config.tokenizer else None
        self.tokenizer_info = load_tokenizer(
            tokenizer_dir or self.loaded.model_dir,
            family,
            config.chat_template,
            hf_config=self.loaded.hf_config,
            trust_remote_code=config.trust_remote_code,
        )
        assert self.tokenizer_info.mask_token_id is not None
        self.mask_token_id: int = self.tokenizer_info.mask_token_id
        self.max_model_len = self.loaded.max_model_len
        self.vocab_size = (
            int(self.loaded.hf_config.get("embedding_size") or self.loaded.hf_config.get("vocab_size") or 0)
            or self.tokenizer_info.vocab_size
        )
        self.generation_config: dict[str, Any] = dict(self.loaded.generation_config)

        self.runner = ModelRunner(
            self.loaded.model,
            self.loaded.device,
            self.tokenizer_info.pad_token_id,
            enforce_eager=config.enforce_eager,
        )
        self.runner.warm_up()  # torch.compile happens here, before the server reports ready
        self.stats = EngineStats()
        self.policy_context = PolicyContext(
            mask_token_id=self.mask_token_id,
            logit_shift=bool(getattr(self.loaded.model, "logit_shift", False)),
            vocab_size=self.vocab_size,
            device=self.loaded.device,
            runner=self.runner,
            config=config,
            tokenizer_info=self.tokenizer_info,
            stats=self.stats,
        )
        # every policy exists before the first request: the input processor reads them from another thread
        self.scorer = PromptScorer(self.mask_token_id, self.policy_context.logit_shift, self.max_model_len)
        self._policies: dict[str, DecodingPolicy] = {
            name: get_policy_class(name)(self.policy_context) for name in available_policies()
        }
        self.grammar_backend = create_backend(
            self.tokenizer_info, self.vocab_size, config.structured_outputs_config
        )
        self.frontier_masks = FrontierMasks((self.grammar_backend.vocab_size + 31) // 32)
        self.input_processor = InputProcessor(
            config,
            family,
            self.generation_config,
            self.tokenizer_info,
            self.vocab_size,
            self.max_model_len,
            self._policies,
            self.grammar_backend,
        )
        self._check_server_defaults()
        self.scheduler = Scheduler(config.max_num_seqs, config.max_waiting_requests, MAX_N)
        self.cache_scheduler = self._plan_cache_memory()
        self.output_processor = OutputProcessor(
            self.tokenizer_info.decode,
            self.tokenizer_info.eos_token_ids,
            incremental=supports_incremental_decoding(self.tokenizer_info.tokenizer),
        )
        self.canvas_tracer = CanvasTracer(
            self.mask_token_id, self.tokenizer_info.eos_token_ids, self.tokenizer_info.decode
        )
        self.requests: dict[str, Request] = {}
        self._failures: list[tuple[str, BaseException]] = []
        self.guard = StepGuard(self._fail_request)
        self._seq_ids = itertools.count()
        self._seed_counter = itertools.count()

    # ----------------------------------------------------------------- requests
    def process_request(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str = ""
    ) -> EngineRequest:
        """Admission (any thread, no engine state touched): the resolved, checked request."""
        return self.input_processor.process(request_id, prompt_token_ids, params)

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Admit and schedule (the offline path; the server admits on the event loop, see add_processed)."""
        self.add_processed(self.process_request(prompt_token_ids, params, request_id))

    def add_processed(self, request: EngineRequest) -> None:
        """Schedule an admitted request: only engine-state checks (request id, queue room) happen here."""
        request_id, params = request.request_id, request.params
        if request_id in self.requests:
            raise VdiffValidationError(f"Request id {request_id!r} is already in use", "request_id")
        prompt_token_ids = list(request.prompt_token_ids)
        blocks_room = self.max_model_len - len(prompt_token_ids)
        seqs = []
        needs_logits_processing = needs_processing(params)
        for index in range(params.n):
            seed = params.seed + index if params.seed is not None else self._derived_seed()
            generator = torch.Generator(device=self.loaded.device).manual_seed(seed % SEED_MODULUS)
            seq = Sequence(
                seq_id=next(self._seq_ids),
                request_id=request_id,
                index=index,
                prompt_token_ids=prompt_token_ids,
                params=params,
                blocks=plan_blocks(
                    params.max_tokens,
                    params.block_length,
                    params.steps,
                    blocks_room,
                    len(prompt_token_ids) if params.decoding == "block" else None,
                ),
                mask_token_id=self.mask_token_id,
                generator=generator,
                policy_name=params.decoding,
                needs_logits_processing=needs_logits_processing,
                token_logprobs=None if params.logprobs is None else {},
                grammar=request.grammar.new_matcher() if request.grammar is not None else None,
            )
            seqs.append(seq)
        self.scheduler.add(seqs)
        for seq in seqs:
            self._policy(seq.policy_name).init_sequence(seq)
        if params.prompt_logprobs is not None:
            self.scorer.start(seqs[0])  # the prompt is shared: scored once, by the first sequence
        engine_request = Request(request_id, prompt_token_ids, params, seqs)
        engine_request.stats.arrival_time = request.arrival_time
        self.requests[request_id] = engine_request
        self.stats.num_prompt_tokens += len(prompt_token_ids)

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request now; returns its final output (finish_reason 'abort') or None if unknown."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        self.scheduler.remove_request(request_id)
        for seq in request.seqs:
            if not seq.is_finished:
                seq.finish("abort")
                self._policy(seq.policy_name).release(seq)
            self.cache_scheduler.release(seq)
        request.stats.finished_time = time.time()
        return request.make_output({})

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def check_alive(self) -> None:
        """Raises (vdiff.distributed.group.ParallelGroupLost) once a tensor-parallel worker has died, so
        the engine loop dies even while idle."""
        self.runner.check_alive()

    @property
    def num_running_seqs(self) -> int:
        return self.scheduler.num_running_seqs

    @property
    def num_waiting_requests(self) -> int:
        return self.scheduler.num_waiting_requests

    # --------------------------------------------------------------------- step
    def step(self) -> list[RequestOutput]:
        """One denoising step for every running sequence (one forward), then report what changed.

        A failure is contained to the requests it came from (see step_guard): they fail, the others go on."""
        batch: list[Sequence] = self.cache_scheduler.schedule()
        now = time.time()
        for seq in batch:
            if seq.status is SequenceStatus.WAITING:
                seq.status = SequenceStatus.RUNNING
                seq.stats.scheduled_time = now
                request = self.requests[seq.request_id]
                request.stats.scheduled_time = request.stats.scheduled_time or now

        planned, forward_requests, idle = [], [], []
        for seq in batch:
            prepare = self.scorer.prepare if seq.is_scoring else self._policy(seq.policy_name).prepare
            forward_request = self.guard.call([seq], prepare, seq)
            if forward_request is self.guard.FAILED:
                continue
            if forward_request is None:
                idle.append(seq)
            else:
                planned.append(seq)
                forward_requests.append(forward_request)
        planned, forward_requests, _ = self.cache_scheduler.pack(planned, forward_requests)  # the rest wait
        if planned:
            self.frontier_masks.start(planned)  # grammar bitmasks fill on a worker thread during the forward
            forwards_before = self.runner.num_forwards
            planned, forward_requests, results = self.guard.execute(
                self.runner.execute, planned, forward_requests
            )
            self.stats.record_step(len(planned), self.runner.num_forwards - forwards_before)
            scoring = [index for index, seq in enumerate(planned) if seq.is_scoring]
            for index in scoring:
                seq = planned[index]
                self.guard.call([seq], self.scorer.commit, seq, forward_requests[index], results[index])
                seq.stats.num_forwards += 1
            if scoring:  # the rest of the step is the policies'
                keep = [index for index in range(len(planned)) if index not in set(scoring)]
                planned = [planned[index] for index in keep]
                forward_requests = [forward_requests[index] for index in keep]
                results = [results[index] for index in keep]
            raw = raw_logits(planned, results)
            canvas = self.canvas_tracer.before_commit(planned, results)
            if planned:
                self.guard.call(
                    [seq for seq in planned if seq.needs_logits_processing],
                    process_results,
                    planned,
                    forward_requests,
                    results,
                    self.mask_token_id,
                    self.tokenizer_info.eos_token_ids,
                )
                self.guard.call(
                    [seq for seq in planned if seq.grammar is not None],
                    self.frontier_masks.apply,
                    planned,
                    results,
                )
            by_policy: dict[str, tuple[list[Sequence], list]] = {}
            for seq, result in zip(planned, results, strict=True):
                if seq.is_finished:
                    continue  # failed above
                seq.stats.num_forwards += 1
                seq.stats.num_denoising_steps += 1
                group = by_policy.setdefault(seq.policy_name, ([], []))
                group[0].append(seq)
                group[1].append(result)
            for name, (seqs, seq_results) in by_policy.items():
                self.guard.commit(self._policy(name).commit, seqs, seq_results)
            if canvas:
                culprits = [planned[index] for index in canvas]
                self.guard.call(culprits, self.canvas_tracer.after_commit, canvas, planned, forward_requests)
            if raw:
                self.guard.call(
                    [planned[index] for index in raw],
                    record_committed,
                    planned,
                    forward_requests,
                    raw,
                    self.mask_token_id,
                )
            touched_requests = {seq.request_id for seq in planned if seq.request_id in self.requests}
            for request_id in touched_requests:
                self.requests[request_id].stats.num_forwards += 1
        return self._postprocess([seq for seq in planned + idle if seq.request_id in self.requests])

    def pop_failures(self) -> list[tuple[str, BaseException]]:
        """Requests that failed inside the step loop since the last call (already removed)."""
        failures, self._failures = self._failures, []
        return failures

    def _fail_request(self, request_id: str, error: BaseException) -> None:
        if request_id in self.requests:
            self.abort_request(request_id)
            self._failures.append((request_id, error))

    def _postprocess(self, seqs: list[Sequence]) -> list[RequestOutput]:
        deltas: dict[str, dict[int, tuple[list[int], str]]] = {}
        changed: dict[str, None] = {}
        now = time.time()
        for seq in seqs:
            frontier_tokens = seq.advance_frontier()
            self.stats.num_committed_tokens += len(frontier_tokens)
            if not frontier_tokens and seq.frontier >= seq.gen_len and not seq.is_finished:
                seq.finish(
                    "length"
                )  # a policy with nothing left to decode; cannot happen with max_tokens <= gen_len
            new_tokens, new_text = self.output_processor.process(seq, frontier_tokens)
            if new_tokens or new_text or seq.is_finished or seq.canvas_frames:
                changed[seq.request_id] = None
                deltas.setdefault(seq.request_id, {})[seq.index] = (new_tokens, new_text)
                self.stats.num_generation_tokens += len(new_tokens)
                request_stats = self.requests[seq.request_id].stats
                if new_tokens and request_stats.first_token_time is None:
                    request_stats.first_token_time = now
            if seq.is_finished:
                if seq.frontier < seq.gen_len and seq.finish_reason == "stop":
                    self.stats.num_early_exits += 1
                self._policy(seq.policy_name).release(seq)
                self.cache_scheduler.release(seq)

        outputs = []
        for request_id in changed:
            request = self.requests[request_id]
            if request.is_finished:
                request.stats.finished_time = now
                self.stats.num_requests_finished += 1
                del self.requests[request_id]
            outputs.append(request.make_output(deltas.get(request_id, {})))
        self.scheduler.free_finished()
        return outputs

    # ------------------------------------------------------------------ helpers
    def _policy(self, name: str) -> DecodingPolicy:
        policy = self._policies.get(name)
        if policy is None:
            policy = self._policies[name] = get_policy_class(name)(self.policy_context)
        return policy

    def _plan_cache_memory(self) -> CacheScheduler:
        """The cache budget in blocks (engine/memory_budget.py) and the scheduler that keeps to it."""
        config, max_model_len = self.config, self.max_model_len
        max_batched = config.max_num_batched_tokens or default_max_num_batched_tokens(max_model_len)
        self.input_processor.max_num_batched_tokens = max_batched
        bytes_per_token = kv_bytes_per_token(self.runner)
        verifier = getattr(self._policies.get("apd"), "verifier", None)
        verifier_bytes = kv_bytes_per_token(verifier.runner) if verifier is not None else 0
        ratio = verifier_bytes / bytes_per_token if bytes_per_token else 0.0
        num_blocks = 0
        if bytes_per_token:
            budget = cache_budget_bytes(config, self.runner, max_model_len)
            num_blocks = budget // (BLOCK_SIZE * bytes_per_token)
        self.input_processor.cache_capacity_tokens = num_blocks * BLOCK_SIZE
        self.input_processor.verifier_ratio = ratio
        logger.info(
            "KV cache: %d blocks of %d tokens (%.1f MiB, %d bytes per token)",
            num_blocks,
            BLOCK_SIZE,
            num_blocks * BLOCK_SIZE * bytes_per_token / 2**20,
            bytes_per_token,
        )
        return CacheScheduler(
            self.scheduler, BlockManager(num_blocks), ratio, max_batched, self._reset_caches
        )

    def _reset_caches(self, seq: Sequence) -> None:
        """A preempted sequence keeps its canvas; its policy state (caches) starts over."""
        policy = self._policy(seq.policy_name)
        policy.release(seq)
        policy.init_sequence(seq)

    @property
    def kv_cache_usage(self) -> float:
        return self.cache_scheduler.blocks.usage

    @property
    def num_preemptions(self) -> int:
        return self.cache_scheduler.num_preemptions

    def _check_server_defaults(self) -> None:
        """A default that every request would be refused for fails at startup, naming its flag."""
        resolved = self.input_processor.resolve(SamplingParams())
        logger.info("default decoding for requests that name none: %s", resolved.decoding)
        try:
            self._policy(resolved.decoding).validate(resolved, self.loaded.family.name)
        except VdiffValidationError as error:
            knob = KNOBS_BY_NAME.get(error.param or "")
            flag = knob.flag_name if knob is not None and knob.flag_name else error.param
            raise VdiffValidationError(f"{flag}: {error.message}", flag) from error

    def _derived_seed(self) -> int:
        return self.config.seed * SEED_STRIDE + next(self._seed_counter)
