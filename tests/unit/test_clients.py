"""processor.kafka._aiokafka_private (the fetch fast path) and processor.kafka.clients: the
processor's consumer takes aiokafka's own records batch by batch, exactly where aiokafka's
per-record path would, compressed or not; others are untouched. A batch that cannot be
decoded stops the partition there, by name."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import ConsumerRecord, TopicPartition

from processor.config import Settings
from processor.errors import UndecodableBatchError
from processor.kafka._aiokafka_private import bare_value, use_bare_records
from processor.kafka.batches import CODECS
from processor.kafka.clients import make_consumer

TP = TopicPartition("sensor.readings", 3)


def fetched_bytes(batches: list[range], codec: int = 0) -> bytes:
    """v2 record batches, one per range of offsets (gaps between ranges, as compaction
    leaves them)."""
    data = b""
    for offsets in batches:
        builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
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


@pytest.mark.parametrize("compression", list(CODECS))
@pytest.mark.parametrize("start", [0, 3, 8, 10, 12])
@pytest.mark.parametrize("chunk", [1, 4, 7, 100])
async def test_bare_getall_takes_what_aiokafka_would_and_moves_the_position_alike(
    start: int, chunk: int, compression: str
) -> None:
    # A fetch answers from the batch that holds its offset (or the next one, in a gap).
    batches = [range(7), range(7, 10), range(12, 20)]
    kept = [offsets for offsets in batches if offsets[-1] >= start]
    data = fetched_bytes(kept, CODECS[compression])
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


def _flip_payload_byte(batch: bytearray) -> None:
    batch[-8] ^= 0xFF


def _zero_payload_start(batch: bytearray) -> None:
    batch[61:77] = bytes(16)  # the records (compressed: the codec's frame) start at 61


def _with_crc(change: Callable[[bytearray], None]) -> Callable[[bytearray], None]:
    """``change``, then a CRC that matches: bytes a buggy producer could have written."""

    def changed(batch: bytearray) -> None:
        change(batch)
        struct.pack_into(">I", batch, 17, calc_crc32c(memoryview(batch)[21:]))

    return changed


def _codec(codec_id: int) -> Callable[[bytearray], None]:
    def change(batch: bytearray) -> None:
        struct.pack_into(">h", batch, 21, codec_id)  # attributes: the low 3 bits are the codec

    return change


def _length(batch: bytearray) -> None:
    struct.pack_into(">i", batch, 8, 3)  # shorter than any batch header


def broken_fetch(compression: str, change: Callable[[bytearray], None]) -> tuple[bytes, bytes]:
    """Offsets 0-4 intact, then 5-8 in a batch whose bytes went through ``change``, then 9-11
    intact: (the bytes up to the broken batch, the bytes from it on)."""
    codec = CODECS[compression]
    broken = bytearray(fetched_bytes([range(5, 9)], codec))
    change(broken)
    return fetched_bytes([range(5)], codec), bytes(broken) + fetched_bytes([range(9, 12)], codec)


def fetch_result(data: bytes, start: int) -> tuple[FetchResult, Any]:
    subscriptions = SubscriptionState()
    subscriptions.assign_from_user({TP})
    assignment = subscriptions.subscription.assignment
    assignment.state_value(TP).seek(start)
    records = PartitionRecords(TP, MemoryRecords(data), [], start, None, bare_value, True, 0)
    return FetchResult(TP, assignment=assignment, partition_records=records, backoff=0), assignment


@pytest.mark.parametrize(
    ("compression", "change", "cause"),
    [
        ("none", _flip_payload_byte, "CRC mismatch"),
        ("zstd", _flip_payload_byte, "CRC mismatch"),
        ("gzip", _with_crc(_zero_payload_start), "BadGzipFile: Not a gzipped file"),
        ("snappy", _with_crc(_zero_payload_start), "DecompressionError: snappy"),
        ("lz4", _with_crc(_zero_payload_start), "DecompressionError: lz4"),
        ("zstd", _with_crc(_zero_payload_start), "DecompressionError: "),
        ("none", _with_crc(_codec(5)), "UnsupportedCodecError: Unknown compression codec 0x05"),
        ("none", _length, "CorruptRecordException: Record size is less than"),
    ],
)
async def test_an_undecodable_batch_stops_there_and_names_topic_partition_offset_and_cause(
    compression: str, change: Callable[[bytearray], None], cause: str
) -> None:
    head, rest = broken_fetch(compression, change)
    result, assignment = fetch_result(head + rest, 0)
    before = result.getall(100)  # what precedes the broken batch is handed out
    assert [r.offset for r in before] == [0, 1, 2, 3, 4]
    assert not result.has_more()  # the rest is dropped, to be fetched again from offset 5
    assert assignment.state_value(TP).position == 5

    refetched, assignment = fetch_result(rest, 5)
    with pytest.raises(UndecodableBatchError) as raised:
        refetched.getall(100)
    error = raised.value
    assert (error.topic, error.partition, error.offset) == (TP.topic, TP.partition, 5)
    assert cause in error.cause
    assert "\n" not in str(error)
    assert f"topic {TP.topic} partition {TP.partition} at offset 5: " in str(error)
    # Nothing past it is handed out or passed: the next fetch starts at it again.
    assert refetched.getall(100) == []
    assert not refetched.has_more()
    assert assignment.state_value(TP).position == 5


async def test_the_processor_consumer_is_marked_bare_and_tuned_from_settings() -> None:
    settings = Settings(bootstrap_servers="localhost:9092", fetch_max_wait_ms=40)
    consumer = make_consumer(settings, 1 << 30)
    try:
        assert consumer._value_deserializer is bare_value
        assert consumer._fetch_max_wait_ms == 40
        assert getattr(FetchResult.getall, "bare", False)
    finally:
        await consumer.stop()  # never started: stopping only marks it closed


async def test_without_fast_paths_the_consumer_takes_aiokafkas_own_records() -> None:
    settings = Settings(bootstrap_servers="localhost:9092", aiokafka_fast_paths=False)
    consumer = make_consumer(settings, 1 << 30)
    try:
        assert consumer._value_deserializer is None
    finally:
        await consumer.stop()
