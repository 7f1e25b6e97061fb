"""Scheduling against the cache budget: admission, growth block by block, preemption, the step budget.

Every step, before the policies prepare: running sequences grow their block tables to what they hold
next (arrival order); when the budget runs out the newest running sequence is preempted (its caches are
dropped and its blocks freed; its canvas, and so everything it streamed, stays) and goes back to the head
of the queue to be recomputed later. Waiting sequences are admitted only while their first step fits.
After the policies prepare, the step's query positions are capped at --max-num-batched-tokens: the
sequences that have waited longest go first, the rest wait for the next step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vdiff.engine.block_manager import BlockManager, cache_tokens
from vdiff.engine.scheduler import Scheduler
from vdiff.engine.sequence import SequenceStatus


class CacheScheduler:
    def __init__(
        self,
        scheduler: Scheduler,
        blocks: BlockManager,
        verifier_ratio: float,
        max_num_batched_tokens: int,
        on_preempt: Callable[[Any], None],
    ) -> None:
        self.scheduler = scheduler
        self.blocks = blocks
        self.verifier_ratio = verifier_ratio
        self.max_num_batched_tokens = max_num_batched_tokens
        self.on_preempt = on_preempt
        self.num_preemptions = 0

    def need(self, seq: Any) -> int:
        return cache_tokens(seq, self.verifier_ratio)

    def schedule(self) -> list[Any]:
        """The running batch after growth, preemption and admission."""
        running = [seq for seq in self.scheduler.running if not seq.is_finished]
        for seq in running:
            if seq.status is SequenceStatus.WAITING:
                continue
            while not self.blocks.can_hold(seq.seq_id, self.need(seq)):
                victim = next(
                    (other for other in reversed(self.scheduler.running) if self._holds(other)), seq
                )
                self.preempt(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.WAITING:
                self.blocks.hold(seq.seq_id, self.need(seq))
        return self.scheduler.schedule(can_admit=self._admit)

    def _holds(self, seq: Any) -> bool:
        running = seq.status is not SequenceStatus.WAITING and not seq.is_finished
        return running and self.blocks.num_held(seq.seq_id) > 0

    def _admit(self, seq: Any) -> bool:
        need = self.need(seq)
        if not self.blocks.can_hold(seq.seq_id, need):
            return False
        self.blocks.hold(seq.seq_id, need)
        return True

    def preempt(self, seq: Any) -> None:
        self.blocks.free([seq.seq_id])
        self.scheduler.preempt(seq)
        seq.status = SequenceStatus.WAITING
        self.on_preempt(seq)
        self.num_preemptions += 1

    def release(self, seq: Any) -> None:
        self.blocks.free([seq.seq_id])

    def pack(self, seqs: list[Any], requests: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        """(seqs, requests) that fit the step's query budget, least-forwarded first; and the deferred."""
        order = sorted(range(len(seqs)), key=lambda index: seqs[index].stats.num_forwards)
        kept, deferred, used = [], [], 0
        for index in order:
            cost = requests[index].num_rows * requests[index].num_queries
            if kept and used + cost > self.max_num_batched_tokens:
                deferred.append(index)
                continue
            kept.append(index)
            used += cost
        kept.sort()
        return [seqs[i] for i in kept], [requests[i] for i in kept], [seqs[i] for i in deferred]
