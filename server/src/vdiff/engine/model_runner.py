"""One forward over the queries of every running sequence: right padding, a key mask, explicit positions.

Each sequence (ForwardRequest) contributes 1+ rows of queries and optionally its own cached keys. Rows
are right-padded to the longest query window; cached keys are right-padded to the longest cache and
placed before the queries (the model contract). Padded keys are masked out, so a row's result does not
depend on what else is in the batch. The model projects only the positions a policy decides on to the
vocabulary (logits_indices), and only those are cast to float32.
"""

from __future__ import annotations

import torch

from vdiff.engine.compilation import CompiledForward, compile_forward
from vdiff.engine.decoding.base import ForwardRequest, ForwardResult
from vdiff.engine.kv_cache import SequenceKV, pad_past
from vdiff.models.base import DiffusionModel


def group_by_query_length(requests: list[ForwardRequest]) -> list[list[int]]:
    """Indices of the requests, split so that no forward pads a row to more than twice its queries.

    Rows are right-padded to the longest query window of their forward: one sequence refreshing its
    block cache or prefilling (the whole canvas) would otherwise make every cached row of the batch
    pay for the whole canvas. Groups are runs of the requests sorted by query length, longest first.
    """
    order = sorted(range(len(requests)), key=lambda index: -requests[index].num_queries)
    groups: list[list[int]] = []
    longest = 0
    for index in order:
        length = requests[index].num_queries
        if not groups or 2 * length < longest:
            groups.append([])
            longest = length
        groups[-1].append(index)
    return groups


class ModelRunner:
    def __init__(
        self,
        model: DiffusionModel,
        device: torch.device,
        pad_token_id: int = 0,
        enforce_eager: bool = True,
    ) -> None:
        self.model = model
        self.device = device
        self.pad_token_id = pad_token_id
        self.num_forwards = 0
        # the trust_remote_code wrapper (unbatched) runs foreign code: never compiled
        self.forward = compile_forward(model, device, enforce_eager or not self.supports_batching)
        parallel = getattr(model, "parallel_forward", None)
        if parallel is not None:  # tensor parallel: every rank runs this forward on its shard, eagerly
            self.forward = parallel

    @torch.inference_mode()
    def warm_up(self, length: int = 16) -> None:
        """Compile before the first request (the server reports ready only after this): a full forward
        and, for models with a KV cache, a step reading its keys, each over a 2-row dummy batch (2, not
        1, so no dimension is specialised to size 1)."""
        if not isinstance(self.forward, CompiledForward):
            return
        supports_cache = bool(getattr(self.model, "supports_kv_cache", True))
        before = self.num_forwards
        ids = torch.full((2, length), self.pad_token_id, dtype=torch.int64)
        half = length // 2
        full = ForwardRequest(ids, torch.arange(length), torch.arange(half, length), use_cache=supports_cache)
        keys = self._forward([full])[0].past_key_values
        if keys is not None:
            past = [SequenceKV.from_batch(keys, row, 0, half) for row in range(2)]
            self._forward(
                [ForwardRequest(ids[:, half:], torch.arange(half, length), torch.arange(half), past=past)]
            )
        self.num_forwards = before

    def check_alive(self) -> None:
        """Raises when a tensor-parallel worker of this model is gone (no-op on one device)."""
        check = getattr(self.forward, "check_alive", None)
        if check is not None:
            check()

    @property
    def supports_batching(self) -> bool:
        return getattr(self.model, "supports_batching", True)

    @torch.inference_mode()
    def execute(self, requests: list[ForwardRequest]) -> list[ForwardResult]:
        """Run the requests in as few forwards as padding allows (one per request for models that
        cannot batch); results in request order."""
        if not requests:
            return []
        if not self.supports_batching:
            return [self._forward([request])[0] for request in requests]
        results: list[ForwardResult | None] = [None] * len(requests)
        for group in group_by_query_length(requests):
            for index, result in zip(group, self._forward([requests[i] for i in group]), strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def _forward(self, requests: list[ForwardRequest]) -> list[ForwardResult]:
        num_rows = sum(request.num_rows for request in requests)
        num_queries = max(request.num_queries for request in requests)
        past_rows = [
            request.past[row] if request.past is not None else None
            for request in requests
            for row in range(request.num_rows)
        ]
        past_key_values, past_mask = pad_past(past_rows, self.device)
        num_cached = 0 if past_mask is None else past_mask.shape[1]

        lengths = [request.num_queries for request in requests]
        if all(length == num_queries for length in lengths):
            # every row is a full window: concatenate instead of padding (the common case)
            input_ids = torch.cat([request.input_ids for request in requests])
            position_ids = torch.cat(
                [request.position_ids.expand(request.num_rows, -1) for request in requests]
            )
            key_mask = torch.ones((num_rows, num_cached + num_queries), dtype=torch.bool)
        else:
            input_ids = torch.full((num_rows, num_queries), self.pad_token_id, dtype=torch.int64)
            position_ids = torch.zeros((num_rows, num_queries), dtype=torch.int64)
            key_mask = torch.zeros((num_rows, num_cached + num_queries), dtype=torch.bool)
            row = 0
            for request, length in zip(requests, lengths, strict=True):
                rows = slice(row, row + request.num_rows)
                input_ids[rows, :length] = request.input_ids
                position_ids[rows, :length] = request.position_ids
                key_mask[rows, num_cached : num_cached + length] = True
                row += request.num_rows
        key_mask = key_mask.to(self.device)
        if past_mask is not None:
            key_mask[:, :num_cached] = past_mask

        logits_indices = self._logits_indices(requests, num_queries)
        output = self.forward(
            input_ids.to(self.device),
            position_ids.to(self.device),
            attention_mask=key_mask,
            past_key_values=past_key_values,
            use_cache=any(request.use_cache for request in requests),
            logits_indices=logits_indices.to(self.device),
        )
        self.num_forwards += 1
        logits = self._split_logits(output.logits, requests)

        results = []
        row = 0
        for request, request_logits in zip(requests, logits, strict=True):
            rows = slice(row, row + request.num_rows)
            kv = None
            if request.use_cache and output.past_key_values is not None:
                kv = [
                    (k[rows, :, : request.num_queries], v[rows, :, : request.num_queries])
                    for k, v in output.past_key_values
                ]
            results.append(ForwardResult(logits=request_logits, past_key_values=kv))
            row += request.num_rows
        return results

    @staticmethod
    def _logits_indices(requests: list[ForwardRequest], num_queries: int) -> torch.Tensor:
        """Flat indices into the batch's rows x num_queries positions of every requested logit."""
        flat_indices = []
        row = 0
        for request in requests:
            for _ in range(request.num_rows):
                flat_indices.append(request.logit_indices + row * num_queries)
                row += 1
        return torch.cat(flat_indices) if len(flat_indices) > 1 else flat_indices[0]

    @staticmethod
    def _split_logits(logits: torch.Tensor, requests: list[ForwardRequest]) -> list[torch.Tensor]:
        """The model's [N, vocab] logits at the requested positions, cast to float32 once; per request a
        view [rows, K, vocab]."""
        vocab = logits.shape[-1]
        sizes = [request.num_rows * request.logit_indices.shape[0] for request in requests]
        return [
            chunk.view(request.num_rows, request.logit_indices.shape[0], vocab)
            for request, chunk in zip(requests, logits.float().split(sizes), strict=True)
        ]
