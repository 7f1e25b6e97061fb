"""Fault containment for the step loop: a failure ends the requests it came from, not the engine.

A batched call that raises is retried one sequence at a time, so only the sequences that fail alone
are failed. When even single-sequence forwards keep failing, the model itself is broken: the error is
raised, the engine loop dies, and the server exits non-zero so that Kubernetes restarts the pod.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from vdiff.errors import RequestFailedError, VdiffValidationError

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FORWARD_FAILURES = 3
"""Steps in a row whose every forward failed before the engine is declared broken."""


class StepGuard:
    FAILED: Any = object()

    def __init__(self, fail_request: Callable[[str, BaseException], None]) -> None:
        self.fail_request = fail_request
        self.num_consecutive_forward_failures = 0

    def call(self, culprits: Sequence[Any], function: Callable[..., Any], *args: Any) -> Any:
        """function(*args); on an error the culprits' requests fail and FAILED is returned."""
        try:
            return function(*args)
        except Exception as error:
            self.fail(culprits, error)
            return self.FAILED

    def execute(
        self, execute: Callable[[list[Any]], list[Any]], seqs: list[Any], requests: list[Any]
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """Run the batched forward; on an error, one forward per sequence to find the ones that fail."""
        try:
            results = execute(requests)
        except Exception as batch_error:
            kept_seqs, kept_requests, results = [], [], []
            for seq, request in zip(seqs, requests, strict=True):
                try:
                    [result] = execute([request])
                except Exception as error:
                    self.fail([seq], error)
                    continue
                kept_seqs.append(seq)
                kept_requests.append(request)
                results.append(result)
            if not kept_seqs:
                self.num_consecutive_forward_failures += 1
                if self.num_consecutive_forward_failures >= MAX_CONSECUTIVE_FORWARD_FAILURES:
                    raise RuntimeError("every forward of the last steps failed: the model is broken") from (
                        batch_error
                    )
            else:
                self.num_consecutive_forward_failures = 0
            return kept_seqs, kept_requests, results
        self.num_consecutive_forward_failures = 0
        return seqs, requests, results

    def commit(
        self, commit: Callable[[list[Any], list[Any]], None], seqs: list[Any], results: list[Any]
    ) -> None:
        """A policy's batched commit; on an error, sequence by sequence."""
        try:
            commit(seqs, results)
        except Exception as batch_error:
            if len(seqs) == 1:
                self.fail(seqs, batch_error)
                return
            for seq, result in zip(seqs, results, strict=True):
                if seq.is_finished:
                    continue
                try:
                    commit([seq], [result])
                except Exception as error:
                    self.fail([seq], error)

    def fail(self, seqs: Sequence[Any], error: BaseException) -> None:
        request_ids = list(dict.fromkeys(seq.request_id for seq in seqs))
        if isinstance(error, VdiffValidationError):
            logger.warning("request(s) %s refused inside the engine step: %s", request_ids, error.message)
        else:
            logger.error(
                "request(s) %s failed inside the engine step: %r", request_ids, error, exc_info=error
            )
        for request_id in request_ids:
            if isinstance(error, VdiffValidationError):  # the request's own fault (a grammar past its limits)
                self.fail_request(request_id, error)
            else:
                self.fail_request(
                    request_id, RequestFailedError(f"The engine failed on this request: {error!r}")
                )
