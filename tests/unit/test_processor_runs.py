"""Whole runs and rebalances of the processor on the in-memory broker: every step of the engine
with its real parts (buffer, spill on disk, flow control, commits), no sockets."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    until,
)

A = TopicPartition("in", 0)
B = TopicPartition("in", 1)


def _processor(
    tmp_path: Path,
    connection: MemoryConnection,
    stage: Any = None,
    fetch_max_bytes: int = 1 << 16,
    **overrides: Any,
) -> Processor:
    values: dict[str, Any] = {
        "spill_dir": tmp_path / "spill",
        "spill_min_free_mb": 0,
        "buffer_max_records": 200,
        "batch_max_records": 50,
        "commit_interval_s": 0.001,
        "shutdown_timeout_s": 5,
        **overrides,
    }
    return Processor(
        Settings(**values),
        MemoryConnector(connection, assign={A, B}),
        stage or CountingStage(),
        MemoryProbe(1024),
        fetch_max_bytes=fetch_max_bytes,
    )


def _outputs(connection: MemoryConnection) -> Counter[tuple[TopicPartition, int]]:
    """How often each input record's output was acknowledged."""
    return Counter(out for staged in connection.outputs.acknowledged for out in staged.outputs)


async def test_a_run_outputs_every_record_once_and_commits_the_ends(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.produce(A, 1_000)
    broker.produce(B, 700, value=b"not json")
    connection = broker.connection()
    processor = _processor(tmp_path, connection)
    running = asyncio.create_task(processor.run())
    await until(lambda: broker.group_offsets == {A: 1_000, B: 700}, what="commits at the ends")
    processor.stop()
    assert await running == 0
    outputs = _outputs(connection)
    assert set(outputs) == {(A, o) for o in range(1_000)} | {(B, o) for o in range(700)}
    assert set(outputs.values()) == {1}
    assert processor.stats.published == 1_000
    assert processor.stats.dead_lettered == {"invalid_json": 700}
    assert connection.closed


async def test_a_spill_that_fills_mid_run_hands_back_and_loses_nothing(tmp_path: Path) -> None:
    # 5,000 records on one partition, 200 in memory, and a spill of 60 kB (about 400 of
    # them) that takes overflow while it has room for a fetch of 4 kB, which the fetches of
    # 1,000 records outgrow: overflow spills until the spill is full, the rest goes back to
    # Kafka and comes again, and once the spill is short of room, fetches take what memory holds.
    broker = MemoryBroker()
    broker.produce(A, 5_000)
    connection = broker.connection(fetch_max=1_000)
    processor = _processor(tmp_path, connection, None, 1 << 12, spill_max_bytes=60_000)
    running = asyncio.create_task(processor.run())
    await until(lambda: broker.group_offsets.get(A) == 5_000, what="the end committed")
    processor.stop()
    assert await running == 0
    outputs = _outputs(connection)
    assert set(outputs) == {(A, o) for o in range(5_000)}
    assert set(outputs.values()) == {1}  # nothing twice: hand-backs are not re-admitted
    assert processor.stats.spilled > 0
    assert processor.stats.handed_back > 0
    assert processor.spill.records == 0


async def test_a_failed_acknowledgement_stops_and_commits_nothing_past_it(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.produce(A, 120)
    connection = broker.connection()
    connection.outputs.hold = True
    processor = _processor(tmp_path, connection)
    running = asyncio.create_task(processor.run())
    await until(lambda: connection.outputs.waiting >= 2, what="two batches sent")
    connection.outputs.acknowledge(1)  # offsets 0-49 of A done
    await until(lambda: broker.group_offsets.get(A) == 50, what="the first batch committed")
    connection.outputs.acknowledge(1, error="NotEnoughReplicas")
    assert await running == 1
    assert broker.group_offsets[A] == 50
    assert connection.closed


async def test_a_failed_send_stops_the_processor(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.produce(A, 60)
    connection = broker.connection()
    connection.outputs.failing_sends = 1
    processor = _processor(tmp_path, connection)
    assert await asyncio.wait_for(processor.run(), 30) == 1
    assert broker.group_offsets.get(A, 0) == 0


async def test_a_revocation_waits_for_the_acknowledgements_in_flight(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.produce(A, 50)
    broker.produce(B, 50)
    connection = broker.connection()
    connection.outputs.hold = True
    processor = _processor(tmp_path, connection)
    running = asyncio.create_task(processor.run())
    await until(lambda: connection.outputs.waiting >= 1, what="a batch sent")
    revoking = asyncio.create_task(connection.consumer.rebalance({B}))
    await until(lambda: processor.stats.joining, what="the revocation begun")
    assert not revoking.done()  # it waits for the acknowledgement
    connection.outputs.acknowledge()
    await revoking
    assert broker.group_offsets[A] == 50  # committed before A went
    assert A not in processor.trackers
    processor.stop()
    assert await running == 0


class _HeldStage(CountingStage):
    """Holds each batch until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.computing = asyncio.Event()
        self.go_on = asyncio.Event()

    async def compute(self, runs: Sequence[Any], *args: Any) -> Any:
        self.computing.set()
        await self.go_on.wait()
        return await super().compute(runs, *args)


async def test_a_batch_computed_across_a_revocation_commits_nothing_for_the_new_owner(
    tmp_path: Path,
) -> None:
    # A batch of A is being computed when A is revoked: it is still sent (a duplicate for the
    # new owner at worst), but its acknowledgement must not move a commit of A any more.
    broker = MemoryBroker(group_offsets={A: 0})
    broker.produce(A, 50)
    connection = broker.connection()
    stage = _HeldStage()
    processor = _processor(tmp_path, connection, stage, shutdown_timeout_s=0.2)
    running = asyncio.create_task(processor.run())
    await stage.computing.wait()
    await connection.consumer.rebalance({B})  # nothing acknowledged: A's commit stays at 0
    stage.go_on.set()
    await until(lambda: len(connection.outputs.acknowledged) == 1, what="the batch acknowledged")
    processor.stop()
    assert await running == 0
    assert broker.group_offsets[A] == 0
    assert all(commit.get(A, 0) == 0 for commit in connection.consumer.commits)


class _HeldRead(SpillStore):
    """A spill whose reads wait until the test lets them go."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reading = threading.Event()
        self.go_on = threading.Event()

    def read(self, topic: str, partition: int, limit: int) -> Any:
        self.reading.set()
        if not self.go_on.wait(30):
            raise TimeoutError("the test never let the spill read go on")
        return super().read(topic, partition, limit)


async def test_a_replay_read_across_a_revocation_is_not_buffered(tmp_path: Path) -> None:
    from tests.support.memory_broker import run

    SpillStore(tmp_path / "spill", 1 << 30, 0).append(A.topic, A.partition, run(A, 0, 30))
    broker = MemoryBroker(group_offsets={A: 0})
    broker.produce(A, 30)
    connection = broker.connection()
    processor = _processor(tmp_path, connection)
    spill = processor.spill = _HeldRead(tmp_path / "spill", 1 << 30, 0)
    parts = processor.attach(connection)
    connection.consumer.listener = processor
    await connection.consumer.rebalance({A})
    replaying = asyncio.create_task(parts.admission.replay())
    assert await asyncio.to_thread(spill.reading.wait, 30)
    await connection.consumer.rebalance(set())
    spill.go_on.set()
    await replaying
    assert processor.buffer.buffered == 0
    assert processor.stats.replayed == 0
