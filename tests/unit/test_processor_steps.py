"""The processor's fetch and rebalance steps, one at a time, against an in-memory consumer and
a real spill directory: interleavings that a live broker produces only now and then."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from processor.config import Settings
from processor.core.memory import MemoryProbe
from processor.core.pipeline import Processor
from processor.core.ports import TopicPartition
from processor.core.spill import SpillStore
from tests.support.memory_broker import (
    CountingStage,
    MemoryBroker,
    MemoryConnection,
    MemoryConnector,
    run,
)

A = TopicPartition("in", 0)
B = TopicPartition("in", 1)


class _HeldSpill(SpillStore):
    """A real spill whose writes wait until the test lets them go."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.writing = threading.Event()
        self.go_on = threading.Event()

    def append(self, topic: str, partition: int, records: Sequence[Any]) -> int:
        self.writing.set()
        if not self.go_on.wait(30):
            raise TimeoutError("the test never let the spill write go on")
        return super().append(topic, partition, records)


def _processor(
    tmp_path: Path,
    connection: MemoryConnection,
    spill: SpillStore | None = None,
    **overrides: Any,
) -> Processor:
    """A processor on ``connection``, its parts attached (``spill``: instead of its own)."""
    values: dict[str, Any] = {
        "spill_dir": tmp_path / "spill",
        "spill_min_free_mb": 0,
        "stage_processes": 0,
        "buffer_max_records": 100,
        "batch_max_records": 50,
        "http_port": 0,
        "commit_interval_s": 0.001,
        **overrides,
    }
    processor = Processor(
        Settings(**values),
        MemoryConnector(connection, assign=set(connection.consumer.assigned)),
        CountingStage(),
        MemoryProbe(1024),
        fetch_max_bytes=1 << 20,
    )
    if spill is not None:
        processor.spill = spill
    processor.attach(connection)
    return processor


def _leave_spill(tmp_path: Path, tp: TopicPartition, first: int, count: int) -> None:
    """Spill segments as an earlier process left them on disk."""
    SpillStore(tmp_path / "spill", 1 << 30, 0).append(tp.topic, tp.partition, run(tp, first, count))


async def test_a_run_fetched_before_a_restart_adopts_leftover_spill_is_dropped(
    tmp_path: Path,
) -> None:
    # The restart race: a fetch returns runs of A (overflowing into the spill) and of B (not
    # set up yet, fetched from its committed offset 100). While the fetch round awaits A's
    # spill write, B's set-up adopts B's leftover spill [100, 150) and seeks past it. B's run
    # is from before that set-up and overlaps the adopted spill.
    _leave_spill(tmp_path, B, 100, 50)
    broker = MemoryBroker(group_offsets={A: 0, B: 100})
    connection = broker.connection(assigned={A, B})
    consumer = connection.consumer
    spill = _HeldSpill(tmp_path / "spill", 1 << 30, 0)
    processor = _processor(tmp_path, connection, spill)
    await processor.on_assigned({A})
    consumer.fetches.append({A: run(A, 0, 150), B: run(B, 100, 200)})

    fetching = asyncio.create_task(processor.fetch_once())
    assert await asyncio.to_thread(spill.writing.wait, 30)
    await processor.on_assigned({B})
    spill.go_on.set()
    await fetching  # raised "overlaps tracked offsets" before set-ups were told apart

    assert consumer.positions[B] == 150  # fetching B goes on after its spill
    assert processor.trackers[B].high_water == 150  # only the adopted spill is tracked
    assert processor.stats.consumed == 150  # A's run: 100 in memory, 50 spilled
    assert spill.pending(B.topic, B.partition) == 50


async def test_a_run_fetched_before_its_partition_is_set_up_is_handed_back(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker(group_offsets={A: 7})
    connection = broker.connection(assigned={A})
    consumer = connection.consumer
    processor = _processor(tmp_path, connection)
    consumer.fetches.append({A: run(A, 7, 20)})
    await processor.fetch_once()
    assert consumer.positions[A] == 7
    assert processor.stats.consumed == 0
    await processor.on_assigned({A})
    consumer.fetches.append({A: run(A, 7, 20)})
    await processor.fetch_once()
    assert processor.stats.consumed == 20


async def test_assigned_partitions_wait_paused_until_each_is_set_up(tmp_path: Path) -> None:
    """Else the client fetches a partition while the ones before it are set up, and each run
    it hands out is handed back and fetched again."""
    broker = MemoryBroker(group_offsets={A: 7, B: 3})
    connection = broker.connection(assigned={A, B})
    consumer = connection.consumer
    processor = _processor(tmp_path, connection)
    paused_at_set_up: list[tuple[TopicPartition, set[TopicPartition]]] = []
    committed = consumer.committed

    async def watched(tp: TopicPartition) -> int | None:
        paused_at_set_up.append((tp, set(consumer.paused_now)))
        return await committed(tp)

    consumer.committed = watched  # type: ignore[method-assign]
    await processor.on_assigned({A, B})
    assert paused_at_set_up == [(A, {A, B}), (B, {B})]
    assert consumer.paused_now == set()
    assert consumer.positions == {A: 7, B: 3}


@pytest.mark.parametrize(("policy", "start"), [("earliest", 40), ("latest", 90)])
async def test_a_partition_without_a_committed_offset_starts_where_the_policy_points(
    tmp_path: Path, policy: str, start: int
) -> None:
    broker = MemoryBroker(log_starts={A: 40})
    broker.produce(A, 50)
    connection = broker.connection(assigned={A})
    consumer = connection.consumer
    processor = _processor(tmp_path, connection, auto_offset_reset=policy)
    await processor.on_assigned({A})
    assert consumer.positions[A] == start
    assert processor.trackers[A].commit_point() == start


async def test_without_spill_room_a_fetch_takes_only_what_memory_holds(tmp_path: Path) -> None:
    # The spill's reserve is larger than any disk: before, the overflow of every fetch went
    # back to Kafka and was fetched again (2.36 million hand-backs for 100,000 inputs).
    broker = MemoryBroker(group_offsets={A: 0})
    connection = broker.connection(assigned={A})
    consumer = connection.consumer
    processor = _processor(tmp_path, connection, spill_min_free_mb=1 << 40)
    await processor.on_assigned({A})
    consumer.fetches.append({A: run(A, 0, 300)})
    await processor.fetch_once()
    assert consumer.max_records_asked == [100]
    assert processor.stats.consumed == 100
    assert processor.stats.handed_back == 0
    assert processor.stats.spilled == 0


async def test_with_spill_room_a_fetch_takes_everything_prefetched(tmp_path: Path) -> None:
    broker = MemoryBroker(group_offsets={A: 0})
    connection = broker.connection(assigned={A})
    consumer = connection.consumer
    processor = _processor(tmp_path, connection)
    await processor.on_assigned({A})
    consumer.fetches.append({A: run(A, 0, 300)})
    await processor.fetch_once()
    assert consumer.max_records_asked == [None]
    assert (processor.stats.consumed, processor.stats.spilled) == (300, 200)


async def test_the_spill_says_once_why_it_cannot_take_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker(group_offsets={A: 0})
    connection = broker.connection(assigned={A})
    processor = _processor(tmp_path, connection, spill_min_free_mb=1 << 40)
    await processor.on_assigned({A})
    for _ in range(3):
        await processor.fetch_once()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "PROCESSOR_SPILL_MIN_FREE_MB" in warnings[0]


async def test_a_partition_revoked_during_its_spill_write_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # The fetch round awaits A's overflow going to disk when A is revoked: the run belongs to
    # no one now, so its spill is discarded and nothing of it is tracked or buffered.
    broker = MemoryBroker(group_offsets={A: 0})
    connection = broker.connection(assigned={A})
    spill = _HeldSpill(tmp_path / "spill", 1 << 30, 0)
    processor = _processor(tmp_path, connection, spill)
    connection.consumer.listener = processor
    await processor.on_assigned({A})
    connection.consumer.fetches.append({A: run(A, 0, 150)})

    fetching = asyncio.create_task(processor.fetch_once())
    assert await asyncio.to_thread(spill.writing.wait, 30)
    await connection.consumer.rebalance(set())
    spill.go_on.set()
    await fetching

    assert A not in processor.trackers
    assert spill.pending(A.topic, A.partition) == 0
    assert processor.buffer.buffered == 0
    assert broker.group_offsets[A] == 0  # the revocation committed nothing it had not finished
