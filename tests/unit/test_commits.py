"""Commits follow acknowledgements: as soon as a point advances, one in flight, a floor apart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from processor.core.commits import Committer
from processor.core.offsets import OffsetTracker
from processor.core.ports import TopicPartition
from processor.core.stats import Stats
from tests.support.memory_broker import MemoryBroker, MemoryConsumer

A = TopicPartition("in", 0)
B = TopicPartition("in", 1)


class _Floor:
    """The floor between commits, passed only when the test says so."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self._passed = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.waiting.set()
        await self._passed.wait()
        self._passed.clear()
        self.waiting.clear()

    def pass_(self) -> None:
        self._passed.set()


async def _until(condition: Callable[[], bool]) -> None:
    """Let the event loop turn until ``condition`` holds (no clock involved)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached in 100 turns of the event loop")


def _setup() -> tuple[
    MemoryConsumer, dict[TopicPartition, OffsetTracker], Committer[TopicPartition], _Floor
]:
    consumer = MemoryConsumer(MemoryBroker(), assigned={A, B})
    trackers = {A: OffsetTracker(0), B: OffsetTracker(0)}
    floor = _Floor()
    committer = Committer(consumer, trackers, Stats(), floor_s=0.1, sleep=floor.sleep)
    for tp in trackers:
        committer.adopt(tp, 0)
    return consumer, trackers, committer, floor


async def test_finished_work_is_committed_at_once_then_coalesced_until_the_floor() -> None:
    consumer, trackers, committer, floor = _setup()
    trackers[A].track(0, 30)
    trackers[B].track(0, 30)
    running = asyncio.create_task(committer.run())
    try:
        trackers[A].finish(0, 10)
        committer.advanced()
        await _until(lambda: len(consumer.commits) == 1)
        assert consumer.commits == [{A: 10}]
        await _until(floor.waiting.is_set)
        trackers[A].finish(10, 20)
        committer.advanced()
        trackers[B].finish(0, 30)
        committer.advanced()
        await asyncio.sleep(0)
        assert len(consumer.commits) == 1  # within the floor: nothing yet
        floor.pass_()
        await _until(lambda: len(consumer.commits) == 2)
        assert consumer.commits[1] == {A: 20, B: 30}  # both advances in one request
    finally:
        running.cancel()


async def test_nothing_is_committed_while_no_point_advanced() -> None:
    consumer, trackers, committer, _ = _setup()
    trackers[A].track(0, 30)
    trackers[A].finish(10, 30)  # offsets 0-9 still unfinished: the point stays at 0
    committer.advanced()
    await committer.commit()
    assert consumer.commits == []  # 0 is what the group has already


async def test_a_refused_commit_is_retried_with_the_next_one() -> None:
    consumer, trackers, committer, floor = _setup()
    consumer.failing_commits = 1
    trackers[A].track(0, 5)
    trackers[A].finish(0, 5)
    running = asyncio.create_task(committer.run())
    try:
        committer.advanced()
        await _until(floor.waiting.is_set)
        assert consumer.commits == []
        floor.pass_()
        await _until(lambda: len(consumer.commits) == 1)
        assert consumer.commits == [{A: 5}]
        assert committer.committed == {A: 5, B: 0}
    finally:
        running.cancel()


async def test_a_revoked_partition_is_committed_alone_and_then_forgotten() -> None:
    consumer, trackers, committer, _ = _setup()
    for tracker in trackers.values():
        tracker.track(0, 8)
        tracker.finish(0, 8)
    await committer.commit({B})
    assert consumer.commits == [{B: 8}]
    committer.forget({B})
    assert B not in committer.committed


async def test_a_stop_that_comes_as_work_finishes_still_ends_the_loop() -> None:
    _, _, committer, _ = _setup()
    running = asyncio.create_task(committer.run())
    await asyncio.sleep(0)  # running waits for an advance
    committer.advanced()
    await asyncio.sleep(0)  # the wait is done; the loop has not yet run on
    running.cancel()
    await asyncio.wait({running}, timeout=5)
    assert running.cancelled()
