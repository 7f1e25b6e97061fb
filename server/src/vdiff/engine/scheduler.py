"""Admission control: a bounded waiting queue of requests feeding at most max_num_seqs running sequences.

Knows nothing about tensors; it only moves sequences between waiting, running and finished, between
engine steps (continuous batching at step granularity).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from vdiff.errors import QueueFullError


class Schedulable(Protocol):
    request_id: str

    @property
    def is_finished(self) -> bool: ...


class Scheduler:
    def __init__(self, max_num_seqs: int, max_waiting_requests: int, max_n: int = 128) -> None:
        self.max_num_seqs = max_num_seqs
        self.max_waiting_requests = max_waiting_requests
        self.max_waiting_seqs = max_waiting_requests * max_num_seqs + max_n
        """Sequences (not requests) the queue holds at most, so that n > 1 requests cannot flood it."""
        self.waiting: deque[list[Schedulable]] = deque()
        """One entry per request: its sequences not admitted yet (a request may be admitted piecewise)."""
        self.running: list[Schedulable] = []

    @property
    def num_running_seqs(self) -> int:
        """Unfinished running sequences (finished ones only leave `running` at the next schedule())."""
        return sum(1 for seq in self.running if not seq.is_finished)

    @property
    def num_waiting_seqs(self) -> int:
        return sum(len(group) for group in self.waiting)

    @property
    def num_waiting_requests(self) -> int:
        return len(self.waiting)

    def num_queued_requests(self) -> int:
        """Waiting requests that will not all fit into the running batch at the next admission."""
        free = self.max_num_seqs - self.num_running_seqs
        queued = 0
        for group in self.waiting:
            if len(group) <= free:
                free -= len(group)
            else:
                free = 0
                queued += 1
        return queued

    def add(self, seqs: list[Schedulable]) -> None:
        """Queue a request's sequences, refusing it when it would have to wait behind a full queue."""
        num_waiting_seqs = self.num_waiting_seqs
        would_fit = self.num_running_seqs + num_waiting_seqs + len(seqs) <= self.max_num_seqs
        if not would_fit and (
            self.num_queued_requests() >= self.max_waiting_requests
            or num_waiting_seqs + len(seqs) > self.max_waiting_seqs
        ):
            raise QueueFullError()
        self.waiting.append(list(seqs))

    def free_finished(self) -> None:
        self.running = [seq for seq in self.running if not seq.is_finished]

    def schedule(self, can_admit: Callable[[Schedulable], bool] | None = None) -> list[Schedulable]:
        """Drop finished sequences, admit waiting ones in arrival order (while `can_admit` agrees: the
        cache budget), return the running batch."""
        self.free_finished()
        while self.waiting and len(self.running) < self.max_num_seqs:
            group = self.waiting[0]
            while group and len(self.running) < self.max_num_seqs:
                if not group[0].is_finished and can_admit is not None and not can_admit(group[0]):
                    return list(self.running)
                seq = group.pop(0)
                if not seq.is_finished:
                    self.running.append(seq)
            if not group:
                self.waiting.popleft()
        return list(self.running)

    def preempt(self, seq: Schedulable) -> None:
        """Take a running sequence back to the head of the queue (its cache was freed)."""
        self.running.remove(seq)
        self.waiting.appendleft([seq])

    def remove_request(self, request_id: str) -> list[Schedulable]:
        """Take every sequence of a request out of the queues (abort); returns them."""
        removed = [seq for seq in self.running if seq.request_id == request_id]
        self.running = [seq for seq in self.running if seq.request_id != request_id]
        kept: deque[list[Schedulable]] = deque()
        for group in self.waiting:
            if group and group[0].request_id == request_id:
                removed.extend(group)
            else:
                kept.append(group)
        self.waiting = kept
        return removed

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or any(not seq.is_finished for seq in self.running)

    def all_sequences(self) -> Iterable[Schedulable]:
        yield from self.running
        for group in self.waiting:
            yield from group
