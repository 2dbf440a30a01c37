"""processor.bare_records and processor.clients: the processor's consumer takes aiokafka's own
records batch by batch, exactly where aiokafka's per-record path would; others are untouched."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition

from processor.bare_records import bare_value, use_bare_records
from processor.clients import make_consumer
from processor.config import Settings

TP = TopicPartition("sensor.readings", 3)


def fetched_bytes(batches: list[range]) -> bytes:
    """v2 record batches, one per range of offsets (gaps between ranges, as compaction
    leaves them)."""
    data = b""
    for offsets in batches:
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
        for offset in offsets:
            key, value = b"s-%d" % offset, b'{"n":%d}' % offset
            builder.append(offset - offsets[0], 1_700_000_000_000, key, value, [("h", key)])
        batch = bytearray(builder.build())
        batch[0:8] = offsets[0].to_bytes(8, "big")  # base offset (not covered by the CRC)
        data += bytes(batch)
    return data


def drain(data: bytes, deserializer: Any, start: int, chunk: int) -> list[tuple[list[Any], int]]:
    """What successive ``getall(chunk)`` calls return from a fetch at ``start``, with the
    consumer's position after each, until the fetched data is used up."""
    subscriptions = SubscriptionState()
    subscriptions.assign_from_user({TP})
    assignment = subscriptions.subscription.assignment
    assignment.state_value(TP).seek(start)
    records = PartitionRecords(TP, MemoryRecords(data), [], start, None, deserializer, True, 0)
    result = FetchResult(TP, assignment=assignment, partition_records=records, backoff=0)
    calls = []
    while result.has_more():
        calls.append((result.getall(chunk), assignment.state_value(TP).position))
    return calls


def summary(calls: list[tuple[list[Any], int]]) -> list[tuple[list[tuple[Any, ...]], int]]:
    return [
        ([(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in got], position)
        for got, position in calls
    ]


@pytest.fixture(autouse=True)
def _installed() -> None:
    use_bare_records()
    use_bare_records()  # twice: still one layer


@pytest.mark.parametrize("start", [0, 3, 8, 10, 12])
@pytest.mark.parametrize("chunk", [1, 4, 7, 100])
async def test_bare_getall_takes_what_aiokafka_would_and_moves_the_position_alike(
    start: int, chunk: int
) -> None:
    # A fetch answers from the batch that holds its offset (or the next one, in a gap).
    batches = [range(7), range(7, 10), range(12, 20)]
    data = fetched_bytes([offsets for offsets in batches if offsets[-1] >= start])
    bare = drain(data, bare_value, start, chunk)
    wrapped = drain(data, bytes, start, chunk)
    assert all(type(r) is ConsumerRecord for got, _ in wrapped for r in got)
    assert not any(type(r) is ConsumerRecord for got, _ in bare for r in got)
    taken = [r.offset for got, _ in bare for r in got]
    assert taken == [o for o in [*range(10), *range(12, 20)] if o >= start]
    assert summary(bare)[-1][1] == 20
    # Same records in the same calls; positions may only run ahead where a batch ends.
    assert [records for records, _ in summary(bare)] == [r for r, _ in summary(wrapped)][
        : len(bare)
    ]
    for (_, bare_position), (_, position) in zip(bare, wrapped, strict=False):
        assert bare_position >= position


async def test_a_corrupt_batch_raises_as_aiokafka_does() -> None:
    data = bytearray(fetched_bytes([range(5)]))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptRecordException):
        drain(bytes(data), bare_value, 0, 100)


async def test_the_processor_consumer_is_marked_bare_and_tuned_from_settings() -> None:
    settings = Settings(bootstrap_servers="localhost:9092", fetch_max_wait_ms=40)
    consumer = make_consumer(settings, 1 << 30)
    try:
        assert consumer._value_deserializer is bare_value
        assert consumer._fetch_max_wait_ms == 40
        assert getattr(FetchResult.getall, "bare", False)
    finally:
        await consumer.stop()  # never started: stopping only marks it closed
