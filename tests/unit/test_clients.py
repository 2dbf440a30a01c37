"""processor.clients: the consumer the processor builds hands out bare records, others not."""

from __future__ import annotations

from typing import Any

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition

from processor.clients import bare_value, make_consumer, use_bare_records
from processor.config import Settings

TP = TopicPartition("sensor.readings", 3)


def fetched(deserializer: Any, count: int = 3) -> list[Any]:
    """What the client's fetcher yields for a v2 batch of ``count`` records at offsets 10..."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for i in range(count):
        builder.append(10 + i, 1_700_000_000_000, b"s-%d" % i, b"{}", [("h", b"%d" % i)])
    records = MemoryRecords(bytes(builder.build()))
    return list(PartitionRecords(TP, records, [], 10, None, deserializer, True, 0))


def test_a_consumer_marked_bare_yields_the_client_records_with_all_the_processor_reads() -> None:
    use_bare_records()
    got = fetched(bare_value)
    assert [type(r) is ConsumerRecord for r in got] == [False] * 3
    assert [r.offset for r in got] == [10, 11, 12]
    assert [r.key for r in got] == [b"s-0", b"s-1", b"s-2"]
    assert [r.value for r in got] == [b"{}"] * 3
    assert [list(r.headers) for r in got] == [[("h", b"0")], [("h", b"1")], [("h", b"2")]]
    assert {r.timestamp for r in got} == {1_700_000_000_000}


def test_other_consumers_still_get_consumer_records() -> None:
    use_bare_records()
    use_bare_records()  # twice: still one layer, other consumers unchanged
    for deserializer in (None, bytes):
        got = fetched(deserializer)
        assert all(type(r) is ConsumerRecord for r in got)
        assert [(r.topic, r.partition, r.offset) for r in got] == [
            (TP.topic, 3, o) for o in (10, 11, 12)
        ]


async def test_the_processor_consumer_is_marked_bare_and_tuned_from_settings() -> None:
    settings = Settings(bootstrap_servers="localhost:9092", fetch_max_wait_ms=40)
    consumer = make_consumer(settings, 1 << 30)
    try:
        assert consumer._value_deserializer is bare_value
        assert consumer._fetch_max_wait_ms == 40
    finally:
        await consumer.stop()  # never started: stopping only marks it closed
    assert getattr(PartitionRecords._consumer_record, "bare", False)
