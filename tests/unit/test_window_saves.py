"""Which acknowledged batches the window state saves (``processor.core.saves``):
rows are packed in snapshots, a few a second, not per batch, so a batch is saved only with a
snapshot taken at or after it, and never before an older batch is ready; and a batch whose
aggregates are still being sent is in no save (``processor.core.windowing``)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.core import saves, windowing
from processor.core.buffer import Chunk
from processor.core.offsets import OffsetTracker
from processor.core.partition_state import StateSpec
from processor.core.ports import TopicPartition
from processor.core.saves import WindowedBatch, saveable
from processor.core.stats import Stats
from processor.messages.jobs import Framed, PointReadings
from processor.state.aggregates import sensor_keys
from processor.state.spec import WindowSpec
from processor.state.store import LocalStore
from tests.support.memory_broker import until
from tests.support.memory_state import FIELDS, MemoryStateTopics

A = TopicPartition("in", 0)
MINUTE_US = 60_000_000
T0_US = 1_796_083_200_000_000  # 2026-12-01T00:00:00Z

# Each batch: (ready, has a snapshot).
batches = st.lists(st.tuples(st.booleans(), st.booleans()), max_size=12)


def _unsaved(flags: list[tuple[bool, bool]]) -> list[WindowedBatch]:
    return [
        WindowedBatch({} if snapped else None, None, 0, ready=ready) for ready, snapped in flags
    ]


@given(batches)
def test_saved_batches_are_ready_from_the_oldest_and_end_with_a_snapshot(
    flags: list[tuple[bool, bool]],
) -> None:
    unsaved = _unsaved(flags)
    count, snap_newest = saveable(unsaved)
    assert all(batch.ready for batch in unsaved[:count])
    if count:
        assert unsaved[count - 1].changes is not None or (snap_newest and count == len(unsaved))
    # Nothing more could be saved: the next batch is not ready, or no later ready batch (up
    # to the first one not ready) has a snapshot to cover it.
    ready = next((i for i, batch in enumerate(unsaved) if not batch.ready), len(unsaved))
    assert all(batch.changes is None for batch in unsaved[count:ready])


@given(batches)
def test_when_every_batch_is_ready_all_are_saved(flags: list[tuple[bool, bool]]) -> None:
    unsaved = _unsaved([(True, snapped) for _, snapped in flags])
    count, snap_newest = saveable(unsaved)
    assert count == len(unsaved)
    assert snap_newest == (bool(unsaved) and unsaved[-1].changes is None)


def test_a_ready_batch_waits_for_a_snapshot_after_it_while_a_later_one_is_in_flight() -> None:
    unsaved = _unsaved([(True, True), (True, False), (False, True)])
    assert saveable(unsaved) == (1, False)
    unsaved[2].ready = True
    assert saveable(unsaved) == (3, False)


def _batch(tracker: OffsetTracker, offset: int, sensor: str, minute: int) -> tuple[Any, Any]:
    """One reading as a one-record batch: its chunk and its stage's result."""
    chunk = Chunk(A, [SimpleNamespace(offset=offset)], offset, offset + 1, tracker)
    readings = PointReadings(
        np.zeros(1, dtype=np.int64),
        np.array([offset], dtype=np.int64),
        sensor_keys([sensor]),
        np.array([T0_US + minute * MINUTE_US], dtype=np.int64),
        np.ones((1, len(FIELDS))),
    )
    return [chunk], Framed(readings=readings)


def _windowing(
    tmp_path: Path,
    tracker: OffsetTracker,
    topics: MemoryStateTopics,
    save_every_s: float,
    *,
    waiting: Callable[[], int] | None = None,
    cleanup_delay_s: float = 600.0,
) -> windowing.Windowing:
    """Windows of a minute, no QC and no dedup, on one partition."""
    return windowing.Windowing(
        StateSpec(WindowSpec(60_000, 0, FIELDS, dedup=False), None, FIELDS),
        topics,
        LocalStore(tmp_path / "state"),
        stage=None,  # type: ignore[arg-type]  # no QC, no dedup: nothing to revise
        trackers={A: tracker},
        committed={},
        stats=Stats(),
        save_every_s=save_every_s,
        waiting=waiting,
        cleanup_delay_s=cleanup_delay_s,
    )


async def test_a_batch_whose_aggregates_wait_to_be_sent_is_in_no_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch k closes minute 0 (its watermark passes it) and waits for room to send the
    aggregates. The batch before it, acknowledged meanwhile, is saved without k's changes:
    a watermark saved past minute 0 before its aggregates went out would drop those windows
    at a restore, and their aggregates with them."""
    # Snapshots come only when asked for: the first batch's, and when all are ready.
    monkeypatch.setattr(
        saves, "time", SimpleNamespace(monotonic=lambda: 1000.0, perf_counter=lambda: 0.0)
    )
    topics = MemoryStateTopics(send_gate=asyncio.Event())
    tracker = OffsetTracker(0)
    state = _windowing(tmp_path, tracker, topics, save_every_s=0.01)
    await state.restore(A)
    _, first = await state.apply(*_batch(tracker, 0, "s1", 0))
    _, second = await state.apply(*_batch(tracker, 1, "s2", 0))
    closing = asyncio.create_task(state.apply(*_batch(tracker, 2, "s1", 1)))
    await until(lambda: topics.sends_waiting == 1, what="the closing batch's send waits")
    await state.persist(first)
    assert topics.writes == [[b"s1\x01", b""]]
    saving = asyncio.create_task(state.persist(second))
    await until(state._saving.locked, what="the second batch's save began")
    await until(lambda: not state._saving.locked(), what="the second batch's save ended")
    assert len(topics.writes) == 1, "saved with the changes of a batch not acknowledged"
    topics.send_gate.set()
    _, third = await closing
    await asyncio.gather(state.persist(third), saving)
    assert topics.writes[1] == [b"s1\x01", b"s2\x01", b""]
    assert len(topics.aggregates) == 2
    state.close()


class _Clocks:
    """``time`` for :mod:`processor.core.saves`: a monotonic clock the test moves, and a
    performance counter that lets each snapshot take the time the test gives it."""

    def __init__(self, *snapshot_s: float) -> None:
        self.now = 0.0
        self._readings = iter([at for took in snapshot_s for at in (0.0, took)])

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return next(self._readings)


def test_a_slow_snapshot_spaces_out_the_next_by_ten_times_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = _Clocks(0.05, 0.001)
    monkeypatch.setattr(saves, "time", clocks)
    unsaved = saves.Unsaved({}, {}, every_s=0.1)
    assert unsaved.every_s == 0.1
    assert unsaved.applied({}, 0).changes is not None  # the first is due at once
    assert unsaved.every_s == pytest.approx(0.5)
    clocks.now = 0.4
    assert unsaved.applied({}, 0).changes is None  # past the interval asked for, not 10x
    clocks.now = 0.5
    assert unsaved.applied({}, 0).changes is not None
    assert unsaved.every_s == 0.1  # a quick snapshot: the interval asked for again


async def test_with_nothing_behind_it_the_newest_batch_is_saved_without_the_pause(
    tmp_path: Path,
) -> None:
    """The end of a burst, or a quiet stream: no later batch would join the save, so its
    offsets are not held back for the least time between saves."""
    tracker = OffsetTracker(0)
    state = _windowing(tmp_path, tracker, MemoryStateTopics(), 60.0, waiting=lambda: 0)
    await state.restore(A)
    _, first = await state.apply(*_batch(tracker, 0, "s1", 0))
    await state.persist(first)  # the first save: nothing to wait for
    _, second = await state.apply(*_batch(tracker, 1, "s2", 0))
    await asyncio.wait_for(state.persist(second), timeout=30)
    state.close()


async def test_with_records_waiting_a_save_waits_out_the_pause_and_the_newest_cuts_it_short(
    tmp_path: Path,
) -> None:
    tracker = OffsetTracker(0)
    queued = [1]
    state = _windowing(tmp_path, tracker, MemoryStateTopics(), 60.0, waiting=lambda: queued[0])
    await state.restore(A)
    _, first = await state.apply(*_batch(tracker, 0, "s1", 0))
    await state.persist(first)
    _, second = await state.apply(*_batch(tracker, 1, "s2", 0))
    _, third = await state.apply(*_batch(tracker, 2, "s3", 0))
    saving = asyncio.create_task(state.persist(second))  # not the newest: waits the pause
    await until(state._saving.locked, what="the second batch's save began")
    for _ in range(20):
        await asyncio.sleep(0)
    assert not saving.done()
    assert not second.persisted.is_set()
    queued[0] = 0  # the queue ran dry: the newest batch, acknowledged, ends the wait
    await asyncio.wait_for(asyncio.gather(saving, state.persist(third)), timeout=30)
    assert third.persisted.is_set()
    state.close()


async def test_a_save_waiting_for_an_older_batch_goes_once_that_one_is_acknowledged(
    tmp_path: Path,
) -> None:
    """Acknowledgements may come out of order: the newest batch's save waits for the older
    one, and the older one's acknowledgement, the last, ends the pause."""
    tracker = OffsetTracker(0)
    state = _windowing(tmp_path, tracker, MemoryStateTopics(), 60.0, waiting=lambda: 0)
    await state.restore(A)
    _, first = await state.apply(*_batch(tracker, 0, "s1", 0))
    await state.persist(first)
    _, second = await state.apply(*_batch(tracker, 1, "s2", 0))
    _, third = await state.apply(*_batch(tracker, 2, "s3", 0))
    saving = asyncio.create_task(state.persist(third))
    await until(state._saving.locked, what="the third batch's save began")
    for _ in range(20):
        await asyncio.sleep(0)
    assert not saving.done()  # the second batch is not acknowledged yet
    await asyncio.wait_for(asyncio.gather(saving, state.persist(second)), timeout=30)
    state.close()


@pytest.mark.parametrize(("delay_s", "dropped"), [(600.0, ["8"]), (3600.0, []), (60.0, ["7", "8"])])
async def test_the_stores_of_partitions_gone_for_long_are_dropped_at_an_assignment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, delay_s: float, dropped: list[str]
) -> None:
    """Partition 7 went 3 minutes ago, 8 half an hour ago: a store goes once it has been
    gone for longer than the cleanup delay."""
    store = LocalStore(tmp_path / "state")
    for partition in (7, 8):
        store.write("in", partition, {b"s1\x01": b"row"}, (1).to_bytes(8, "big"))
        store.release("in", partition)
    store.close()
    for partition, gone_s in ((7, 180), (8, 1800)):
        then = time.time() - gone_s
        for file in (tmp_path / "state" / "in" / str(partition)).iterdir():
            os.utime(file, (then, then))
    state = _windowing(
        tmp_path, OffsetTracker(0), MemoryStateTopics(), 0.1, cleanup_delay_s=delay_s
    )
    await state.restore(A)
    caplog.set_level(logging.INFO, logger="processor")
    await state.sweep()
    kept = sorted(p.name for p in (tmp_path / "state" / "in").iterdir())
    assert kept == sorted({"0", "7", "8"} - set(dropped))
    logged = [r.__dict__["partitions"] for r in caplog.records if "gone for long" in r.getMessage()]
    assert logged == ([[f"in[{p}]" for p in dropped]] if dropped else [])
    state.close()
