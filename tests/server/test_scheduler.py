"""Scheduler admission, capacity and abort (no torch involved)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from vdiff.engine.scheduler import Scheduler
from vdiff.engine.sequence import plan_blocks
from vdiff.errors import QueueFullError


@dataclass(eq=False)
class FakeSeq:
    request_id: str
    finished: bool = False

    @property
    def is_finished(self) -> bool:
        return self.finished


def seqs(request_id: str, n: int = 1) -> list[FakeSeq]:
    return [FakeSeq(request_id) for _ in range(n)]


def test_admits_up_to_max_num_seqs_in_arrival_order() -> None:
    scheduler = Scheduler(max_num_seqs=3, max_waiting_requests=10)
    for name in "abcd":
        scheduler.add(seqs(name))
    assert [s.request_id for s in scheduler.schedule()] == ["a", "b", "c"]
    assert scheduler.num_waiting_requests == 1
    scheduler.running[1].finished = True
    assert [s.request_id for s in scheduler.schedule()] == ["a", "c", "d"]
    assert scheduler.num_waiting_requests == 0


def test_request_with_n_sequences_is_admitted_piecewise() -> None:
    scheduler = Scheduler(max_num_seqs=2, max_waiting_requests=10)
    scheduler.add(seqs("a", 3))
    assert len(scheduler.schedule()) == 2
    assert scheduler.num_waiting_seqs == 1
    for seq in scheduler.running:
        seq.finished = True
    batch = scheduler.schedule()
    assert len(batch) == 1 and batch[0].request_id == "a"
    assert not scheduler.waiting


def test_queue_full_only_counts_requests_that_must_wait() -> None:
    scheduler = Scheduler(max_num_seqs=1, max_waiting_requests=1)
    scheduler.add(seqs("runs-next-step"))  # fits the free slot: not queued
    scheduler.add(seqs("queued"))
    with pytest.raises(QueueFullError):
        scheduler.add(seqs("overflow"))
    scheduler.schedule()
    with pytest.raises(QueueFullError):
        scheduler.add(seqs("still-overflow"))
    assert scheduler.num_queued_requests() == 1


def test_zero_waiting_room_accepts_only_what_fits() -> None:
    scheduler = Scheduler(max_num_seqs=2, max_waiting_requests=0)
    scheduler.add(seqs("a", 2))
    with pytest.raises(QueueFullError):
        scheduler.add(seqs("b"))


def test_remove_request_from_running_and_waiting() -> None:
    scheduler = Scheduler(max_num_seqs=1, max_waiting_requests=5)
    scheduler.add(seqs("a"))
    scheduler.add(seqs("b", 2))
    scheduler.schedule()
    assert len(scheduler.remove_request("b")) == 2
    assert len(scheduler.remove_request("a")) == 1
    assert not scheduler.has_unfinished()
    assert scheduler.schedule() == []


@pytest.mark.parametrize(
    ("max_tokens", "block_length", "steps", "room", "expected"),
    [
        # exact LLaDA layouts
        (64, 32, 64, 1000, [(0, 32, 32), (32, 64, 32)]),
        (64, 32, 16, 1000, [(0, 32, 8), (32, 64, 8)]),
        # canvas rounded up to whole blocks; steps default to one per canvas position
        (40, 32, None, 1000, [(0, 32, 32), (32, 64, 32)]),
        # remainder steps go to the earliest blocks; every block gets at least one
        (24, 8, 10, 1000, [(0, 8, 4), (8, 16, 3), (16, 24, 3)]),
        (24, 8, 2, 1000, [(0, 8, 1), (8, 16, 1), (16, 24, 1)]),
        # block longer than the answer shrinks to it; None = one block (Dream)
        (5, 32, None, 1000, [(0, 5, 5)]),
        (12, None, 6, 1000, [(0, 12, 6)]),
        # rounding capped by the context window: the last block is shorter
        (40, 32, 10, 50, [(0, 32, 5), (32, 50, 5)]),
    ],
)
def test_plan_blocks(max_tokens, block_length, steps, room, expected) -> None:
    blocks = plan_blocks(max_tokens, block_length, steps, room)
    assert [(b.start, b.end, b.num_steps) for b in blocks] == expected


def test_finished_running_sequences_do_not_hold_capacity() -> None:
    scheduler = Scheduler(max_num_seqs=1, max_waiting_requests=0)
    scheduler.add(seqs("a"))
    scheduler.schedule()[0].finished = True
    scheduler.add(seqs("b"))  # a's slot is free even before the next schedule()
    assert [s.request_id for s in scheduler.schedule()] == ["b"]
