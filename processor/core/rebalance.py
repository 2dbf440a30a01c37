"""Rebalances: set each assigned partition up where its work starts, and let revoked ones go
with everything finished committed.

A partition's set-up is its :class:`OffsetTracker`. On assignment its work starts at the
group's committed offset (else where ``auto_offset_reset`` points), continuing after any
spill an earlier process left for it; the consumer is sought there in the same step, with no
await between the seek and the set-up, and only then fetches it (the partitions assigned
wait paused while they are set up one by one). On revocation its buffered and spilled records are
dropped (the new owner reads them again from the commit point), the acknowledgements in
flight are awaited, and what they finished is committed before the partition goes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from processor.core.admission import Admission, Trackers, where
from processor.core.commits import Committer
from processor.core.offsets import OffsetTracker
from processor.core.ports import Consumer, TopicPartition
from processor.core.stats import Stats
from processor.core.windowing import Windowing

log = logging.getLogger(__name__)


class Rebalance:
    """The engine's :class:`~processor.core.ports.PartitionListener`."""

    def __init__(
        self,
        consumer: Consumer,
        trackers: Trackers,
        admission: Admission,
        committer: Committer[TopicPartition],
        settled: Callable[[float], Awaitable[None]],
        *,
        reset_policy: str,
        settle_timeout_s: float,
        windowing: Windowing | None = None,
    ) -> None:
        """``settled(timeout)`` waits for the acknowledgements in flight. With
        ``windowing``, a partition's window state is restored before its first fetch."""
        self._consumer = consumer
        self._trackers = trackers
        self._admission = admission
        self._committer = committer
        self._settled = settled
        self._reset_policy = reset_policy
        self._settle_timeout_s = settle_timeout_s
        self._windowing = windowing

    @property
    def _stats(self) -> Stats:
        return self._admission.stats

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        spill = self._admission.spill
        # Not fetched until set up: a run fetched before would be handed back and fetched
        # again, as often as the client fetched while the set-ups before it took their turn.
        if assigned:
            self._consumer.pause(*assigned)
        for tp in sorted(assigned):
            committed = await self._consumer.committed(tp)
            start = committed if committed is not None else await self._reset_offset(tp)
            resume_at = await asyncio.to_thread(spill.recover, tp.topic, tp.partition, committed)
            if self._windowing is not None:
                await self._windowing.restore(tp)
            tracker = OffsetTracker(start)
            if resume_at is not None:
                tracker.track(start, resume_at)
                log.info("replaying leftover spill", extra=where(tp, offset=start))
            # Seek and set up with no await in between: a run fetched before this point
            # belongs to no set-up of this partition, and admission drops it (the fetch round
            # may hold one while it awaits a spill write).
            self._consumer.seek(tp, start if resume_at is None else resume_at)
            self._consumer.resume(tp)
            self._trackers[tp] = tracker
            self._committer.adopt(tp, committed)
            self._admission.forget({tp})
        if self._windowing is not None:
            await self._windowing.sweep()  # the stores of partitions gone for long
        self._stats.assigned = len(self._trackers)
        self._stats.assignments += 1  # joined, even with nothing assigned
        self._stats.joining = False
        log.info("partitions assigned", extra={"partitions": _names(assigned)})
        self._admission.reconcile()

    async def _reset_offset(self, tp: TopicPartition) -> int:
        """Where a partition without a committed offset starts, per ``auto_offset_reset``."""
        if self._reset_policy == "latest":
            offsets = await self._consumer.end_offsets([tp])
        else:
            offsets = await self._consumer.beginning_offsets([tp])
        return int(offsets[tp])

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._stats.joining = True  # called as every (re)join begins
        revoked = {tp for tp in revoked if tp in self._trackers}
        admission = self._admission
        for tp in revoked:
            admission.buffer.drop(tp)
            await asyncio.to_thread(admission.spill.discard, tp.topic, tp.partition)
        await self._settled(self._settle_timeout_s)
        await self._committer.commit(revoked)
        for tp in revoked:
            del self._trackers[tp]
            if self._windowing is not None:
                await self._windowing.drop(tp)
        admission.forget(revoked)
        self._committer.forget(revoked)
        admission.flow.forget(revoked)
        self._stats.assigned = len(self._trackers)
        log.info("partitions revoked", extra={"partitions": _names(revoked)})


def _names(partitions: set[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)]
