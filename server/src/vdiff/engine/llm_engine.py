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
from vdiff.engine.decoding import DecodingPolicy, PolicyContext, get_policy_class
from vdiff.engine.model_runner import ModelRunner
from vdiff.engine.output_processor import OutputProcessor, supports_incremental_decoding
from vdiff.engine.outputs import RequestOutput
from vdiff.engine.request import Request
from vdiff.engine.scheduler import Scheduler
from vdiff.engine.sequence import Sequence, SequenceStatus, plan_blocks
from vdiff.engine.stats import EngineStats
from vdiff.errors import VdiffValidationError
from vdiff.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

SEED_STRIDE = 1_000_003
"""Derived seeds of requests without a seed: engine seed * stride + counter (distinct per sequence)."""


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
        self._policies: dict[str, DecodingPolicy] = {}
        self._policy(config.decoding)  # an unavailable default policy fails at startup
        if config.draft_model:
            self._policy("apd")  # load the verifier and check its tokenizer at startup
        self.scheduler = Scheduler(config.max_num_seqs, config.max_waiting_requests)
        self.output_processor = OutputProcessor(
            self.tokenizer_info.decode,
            self.tokenizer_info.eos_token_ids,
            incremental=supports_incremental_decoding(self.tokenizer_info.tokenizer),
        )
        self.requests: dict[str, Request] = {}
        self._seq_ids = itertools.count()
        self._seed_counter = itertools.count()

    # ----------------------------------------------------------------- requests
    def resolve_params(self, params: SamplingParams) -> SamplingParams:
        """Fill every None diffusion knob: request, then server flags, then generation_config.json,
        then the model family. Choosing a Dream `alg` selects Dream's rule, `remasking` LLaDA's."""
        family, config, generation = self.loaded.family, self.config, self.generation_config
        use_dream_rule = params.alg is not None or (params.remasking is None and family.dream_alg is not None)

        def pick(*values: Any) -> Any:
            return next((value for value in values if value is not None), None)

        changes: dict[str, Any] = {
            "block_length": pick(
                params.block_length, config.block_length, generation.get("block_length"), family.block_length
            ),
            "steps": pick(params.steps, config.diffusion_steps),
            "decoding": pick(params.decoding, config.decoding),
            "threshold": pick(params.threshold, config.threshold),
            "factor": pick(params.factor, config.factor),
            "kv_cache": pick(params.kv_cache, config.kv_cache),
            "kv_cache_vicinity": pick(params.kv_cache_vicinity, config.kv_cache_vicinity),
            "apd_mixture_weight": pick(params.apd_mixture_weight, config.apd_mixture_weight),
            "apd_kv_window": pick(params.apd_kv_window, config.apd_kv_window),
            "apd_max_lookahead": pick(params.apd_max_lookahead, config.apd_max_lookahead),
        }
        if use_dream_rule:
            changes["alg"] = pick(params.alg, config.dream_alg, generation.get("alg"), family.dream_alg)
            changes["alg_temp"] = pick(params.alg_temp, generation.get("alg_temp"), family.alg_temp, 0.0)
            changes["remasking"] = None
        else:
            changes["remasking"] = pick(
                params.remasking,
                config.remasking,
                generation.get("remasking"),
                family.remasking,
                "low_confidence",
            )
            changes["alg"] = None
        return params.replace(**changes)

    def process_request(self, prompt_token_ids: list[int], params: SamplingParams) -> SamplingParams:
        """Validate a request without touching engine state (any thread); returns the resolved params."""
        if not isinstance(params, SamplingParams):
            raise VdiffValidationError("params must be a SamplingParams", "params")
        params.validate()
        if not prompt_token_ids:
            raise VdiffValidationError("The prompt must contain at least one token", "prompt")
        if any(
            not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.vocab_size
            for t in prompt_token_ids
        ):
            raise VdiffValidationError(
                f"Prompt token ids must be integers in [0, {self.vocab_size})", "prompt"
            )
        total = len(prompt_token_ids) + params.max_tokens
        if total > self.max_model_len:
            raise VdiffValidationError(
                f"This model's maximum context length is {self.max_model_len} tokens; the prompt "
                f"({len(prompt_token_ids)} tokens) plus max_tokens ({params.max_tokens}) is {total}",
                "max_tokens",
            )
        resolved = self.resolve_params(params)
        resolved.validate()
        self._policy(resolved.decoding).validate(resolved, self.loaded.family.name)
        return resolved

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        if request_id in self.requests:
            raise VdiffValidationError(f"Request id {request_id!r} is already in use", "request_id")
        prompt_token_ids = list(prompt_token_ids)
        resolved = self.process_request(prompt_token_ids, params)
        blocks_room = self.max_model_len - len(prompt_token_ids)
        seqs = []
        for index in range(resolved.n):
            seed = resolved.seed + index if resolved.seed is not None else self._derived_seed()
            generator = torch.Generator(device=self.loaded.device).manual_seed(seed)
            seq = Sequence(
                seq_id=next(self._seq_ids),
                request_id=request_id,
                index=index,
                prompt_token_ids=prompt_token_ids,
                params=resolved,
                blocks=plan_blocks(resolved.max_tokens, resolved.block_length, resolved.steps, blocks_room),
                mask_token_id=self.mask_token_id,
                generator=generator,
                policy_name=resolved.decoding,
            )
            seqs.append(seq)
        self.scheduler.add(seqs)
        for seq in seqs:
            self._policy(seq.policy_name).init_sequence(seq)
        request = Request(request_id, prompt_token_ids, resolved, seqs)
        request.stats.arrival_time = time.time()
        self.requests[request_id] = request
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
        request.stats.finished_time = time.time()
        return request.make_output({})

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    @property
    def num_running_seqs(self) -> int:
        return self.scheduler.num_running_seqs

    @property
    def num_waiting_requests(self) -> int:
        return self.scheduler.num_waiting_requests

    # --------------------------------------------------------------------- step
    def step(self) -> list[RequestOutput]:
        """One denoising step for every running sequence (one forward), then report what changed."""
        batch: list[Sequence] = self.scheduler.schedule()  # type: ignore[assignment]
        now = time.time()
        for seq in batch:
            if seq.status is SequenceStatus.WAITING:
                seq.status = SequenceStatus.RUNNING
                seq.stats.scheduled_time = now
                request = self.requests[seq.request_id]
                request.stats.scheduled_time = request.stats.scheduled_time or now

        planned, forward_requests, idle = [], [], []
        for seq in batch:
            forward_request = self._policy(seq.policy_name).prepare(seq)
            if forward_request is None:
                idle.append(seq)
            else:
                planned.append(seq)
                forward_requests.append(forward_request)
        if planned:
            forwards_before = self.runner.num_forwards
            results = self.runner.execute(forward_requests)
            self.stats.record_step(len(planned), self.runner.num_forwards - forwards_before)
            by_policy: dict[str, tuple[list[Sequence], list]] = {}
            for seq, result in zip(planned, results, strict=True):
                seq.stats.num_forwards += 1
                seq.stats.num_denoising_steps += 1
                group = by_policy.setdefault(seq.policy_name, ([], []))
                group[0].append(seq)
                group[1].append(result)
            for name, (seqs, seq_results) in by_policy.items():
                self._policy(name).commit(seqs, seq_results)
            touched_requests = {seq.request_id for seq in planned}
            for request_id in touched_requests:
                self.requests[request_id].stats.num_forwards += 1
        return self._postprocess(planned + idle)

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
            if new_tokens or new_text or seq.is_finished:
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

    def _derived_seed(self) -> int:
        return self.config.seed * SEED_STRIDE + next(self._seed_counter)
