"""One contract for the engine's ports, run against the in-memory broker that the unit tests
use and against the Kafka adapters on a real broker: the fake is only worth the steps tested
on it while it agrees with the real thing.

Not in the contract: ``end_offsets``, which the embedded broker answers wrongly (README).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from processor.core.ports import Connection, Stage, TopicPartition
from processor.kafka.connection import KafkaConnector
from processor.workers.runner import ThreadRunner
from processor.workers.stage_port import RunnerStage
from tests.integration.broker import TestBroker
from tests.integration.kafka import DEADLINE_S, Topics, produce, read_all, settings_for
from tests.support.memory_broker import VALID, CountingStage, MemoryBroker, MemoryConnector

pytestmark = pytest.mark.integration
PARTITIONS = 4


@dataclass
class _Listener:
    assigned: set[TopicPartition] = field(default_factory=set)
    revoked: list[set[TopicPartition]] = field(default_factory=list)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.revoked.append(revoked)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned = assigned


@dataclass
class _Harness:
    """A connection to one of the two brokers, with its input topic and a stage for it."""

    kind: str
    connection: Connection
    listener: _Listener
    stage: Stage
    input: str
    memory: MemoryBroker | None = None
    bootstrap: str = ""
    output: str = ""

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.input, partition)

    async def produce(self, partition: int, count: int) -> None:
        if self.memory is not None:
            self.memory.produce(self.tp(partition), count)
        else:
            await produce(self.bootstrap, self.input, [(b"s", VALID)] * count, partition)

    async def joined(self) -> None:
        """Fetch (and drop) until the group assigned the partitions, then start at 0."""
        consumer = self.connection.consumer
        deadline = time.monotonic() + DEADLINE_S
        while not self.listener.assigned:
            assert time.monotonic() < deadline, "no assignment"
            await consumer.getmany(100, None)
        for tp in self.listener.assigned:
            consumer.seek(tp, 0)

    async def fetch(
        self, count: int, max_records: int | None = None
    ) -> tuple[dict[TopicPartition, list[int]], list[int]]:
        """Fetch until ``count`` records came: their offsets by partition, and the fetch sizes."""
        offsets: dict[TopicPartition, list[int]] = {}
        sizes: list[int] = []
        deadline = time.monotonic() + DEADLINE_S
        while sum(map(len, offsets.values())) < count:
            assert time.monotonic() < deadline, f"fewer than {count} records fetched"
            fetched = await self.connection.consumer.getmany(100, max_records)
            sizes.append(sum(len(records) for records in fetched.values()))
            for tp, records in fetched.items():
                offsets.setdefault(tp, []).extend(r.offset for r in records)
        return offsets, sizes


@pytest.fixture(params=["memory", "kafka"])
async def harness(
    request: pytest.FixtureRequest, broker: TestBroker, bootstrap: str, tmp_path: Path
) -> AsyncIterator[_Harness]:
    listener = _Listener()
    if request.param == "memory":
        memory = MemoryBroker()
        topic = "in"
        connection = memory.connection()
        connector = MemoryConnector(
            connection, {TopicPartition(topic, p) for p in range(PARTITIONS)}
        )
        await connector.connect(listener)
        yield _Harness("memory", connection, listener, CountingStage(), topic, memory=memory)
        return
    topics = await Topics.fresh().create(bootstrap, PARTITIONS)
    settings = settings_for(broker, topics, tmp_path)
    kafka = await KafkaConnector(settings, 1 << 30).connect(listener)
    stage = RunnerStage(ThreadRunner(settings), settings.max_payload_bytes)
    await stage.start()
    try:
        yield _Harness(
            "kafka", kafka, listener, stage, topics.input, bootstrap=bootstrap, output=topics.output
        )
    finally:
        await stage.close()
        await kafka.close(10)


async def test_a_join_assigns_every_input_partition_through_the_listener(
    harness: _Harness,
) -> None:
    await harness.joined()
    expected = {harness.tp(p) for p in range(PARTITIONS)}
    assert harness.listener.assigned == expected
    assert harness.connection.consumer.assignment() == expected
    assert all(type(tp) is TopicPartition for tp in harness.listener.assigned)


async def test_fetching_goes_on_where_a_seek_points_in_offset_order(harness: _Harness) -> None:
    await harness.produce(0, 10)
    await harness.joined()
    consumer = harness.connection.consumer
    consumer.seek(harness.tp(0), 3)
    offsets, _ = await harness.fetch(7)
    assert offsets == {harness.tp(0): list(range(3, 10))}
    assert all(type(tp) is TopicPartition for tp in offsets)
    assert consumer.highwater(harness.tp(0)) == 10


async def test_a_paused_partition_gives_nothing_until_resumed(harness: _Harness) -> None:
    await harness.produce(0, 10)
    await harness.produce(1, 10)
    await harness.joined()
    consumer = harness.connection.consumer
    consumer.pause(harness.tp(0))
    offsets, _ = await harness.fetch(10)
    assert offsets == {harness.tp(1): list(range(10))}
    consumer.resume(harness.tp(0))
    offsets, _ = await harness.fetch(10)
    assert offsets == {harness.tp(0): list(range(10))}


async def test_max_records_caps_every_fetch(harness: _Harness) -> None:
    await harness.produce(2, 10)
    await harness.joined()
    offsets, sizes = await harness.fetch(10, max_records=3)
    assert offsets == {harness.tp(2): list(range(10))}
    assert max(sizes) <= 3


async def test_a_commit_is_what_committed_answers(harness: _Harness) -> None:
    await harness.produce(3, 10)
    await harness.joined()
    consumer = harness.connection.consumer
    assert await consumer.committed(harness.tp(3)) is None
    await consumer.commit({harness.tp(3): 5})
    assert await consumer.committed(harness.tp(3)) == 5
    assert await consumer.beginning_offsets([harness.tp(3)]) == {harness.tp(3): 0}


async def test_an_acknowledged_send_is_on_the_output(harness: _Harness) -> None:
    await harness.produce(0, 20)
    await harness.joined()
    consumer = harness.connection.consumer
    outputs = harness.connection.outputs
    fetched = await consumer.getmany(100, None)
    while not fetched:
        fetched = await consumer.getmany(100, None)
    runs: Sequence[Any] = list(fetched.items())
    records = [record for _, run in runs for record in run]
    staged = await harness.stage.compute(runs, records, None, await outputs.framing())
    assert staged.published == len(records)
    await (await outputs.send(staged))
    if harness.memory is None:
        await read_all(harness.bootstrap, harness.output, len(records))
    else:
        assert harness.connection.outputs.acknowledged == [staged]  # type: ignore[attr-defined]
