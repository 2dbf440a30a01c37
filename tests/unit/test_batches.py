"""processor.batches: produce batches built off the event loop are the ones aiokafka builds."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from processor.kafka.batches import CODECS, BatchSpec, KeyPartitioner, PrebuiltBatch, encode_batches
from processor.messages.codec import Headers

from .records import messages

PARTITIONS = (0, 1, 2, 3)
KEYS = [b"sensor-%d" % (i % 13) for i in range(2_000)]
VALUES = [b"v" * (i % 97) for i in range(2_000)]
STAMPS = [[("traceparent", b"00-%032x-%016x-01" % (i % 3, 7))] for i in range(2_000)]


def aiokafka_batches(
    spec: BatchSpec, timestamp: int, keys: list[bytes], values: list[bytes], headers: list[Headers]
) -> list[tuple[int, bytes]]:
    """What the batch API (create_batch/append/send_batch on full) would send."""
    murmur2 = DefaultPartitioner()
    partitions = list(spec.partitions)
    open_batches: dict[int, BatchBuilder] = {}
    sent: list[tuple[int, bytes]] = []
    for key, value, record_headers in zip(keys, values, headers, strict=True):
        partition = murmur2(key, partitions, partitions)
        batch = open_batches.setdefault(partition, BatchBuilder(spec.max_bytes, spec.codec))
        if batch.append(timestamp=timestamp, key=key, value=value, headers=record_headers) is None:
            sent.append((partition, bytes(batch._build())))
            batch = open_batches[partition] = BatchBuilder(spec.max_bytes, spec.codec)
            batch.append(timestamp=timestamp, key=key, value=value, headers=record_headers)
    return sent + [(p, bytes(batch._build())) for p, batch in open_batches.items()]


def timestamp_of(data: bytes) -> int:
    return int(next(iter(DefaultRecordBatch(data))).timestamp)


@pytest.mark.parametrize("compression", list(CODECS))
def test_batches_are_byte_for_byte_what_the_batch_api_builds(compression: str) -> None:
    spec = BatchSpec(PARTITIONS, 16_384, CODECS[compression])
    built = encode_batches(spec, KEYS, VALUES, STAMPS, KeyPartitioner(PARTITIONS))
    expected = aiokafka_batches(spec, timestamp_of(built[0].data), KEYS, VALUES, STAMPS)
    by_partition = sorted(((b.partition, b.data) for b in built), key=lambda pair: pair[0])
    assert by_partition == sorted(expected, key=lambda pair: pair[0])  # stable: in send order
    assert len(built) > len(PARTITIONS)  # full batches were cut
    assert sum(b.records for b in built) == len(KEYS)


def test_records_keep_their_order_within_a_partition() -> None:
    keys = [b"a", b"b"] * 500
    values = [b"%d" % i for i in range(1_000)]
    built = encode_batches(
        BatchSpec(PARTITIONS, 1_024), keys, values, [[]] * 1_000, KeyPartitioner(PARTITIONS)
    )
    for partition in {b.partition for b in built}:
        sent = messages([b for b in built if b.partition == partition])
        assert [int(v) for _, v, _ in sent] == sorted(int(v) for _, v, _ in sent)
    assert sorted(v for _, v, _ in messages(built)) == sorted(values)


def test_a_record_larger_than_a_batch_travels_alone() -> None:
    spec = BatchSpec((0,), 1_000)
    values = [b"small", b"x" * 5_000, b"small again"]
    built = encode_batches(spec, [b"k"] * 3, values, [[]] * 3, KeyPartitioner((0,)))
    assert [b.records for b in built] == [1, 1, 1]
    assert [v for _, v, _ in messages(built)] == values


def test_the_partitioner_is_sends() -> None:
    murmur2 = DefaultPartitioner()
    for partitions in ([0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6]):
        ours = KeyPartitioner(partitions)
        for key in {*KEYS, b"", "é".encode()}:
            assert ours(key) == murmur2(key, partitions, partitions)
            assert ours(key) == murmur2(key, partitions, partitions)  # memoised
        assert ours(None) in partitions


def test_an_idempotent_producer_gets_the_header_the_c_builder_would_write() -> None:
    spec = BatchSpec((0,), 1 << 20)
    [built] = encode_batches(spec, KEYS[:50], VALUES[:50], STAMPS[:50], KeyPartitioner((0,)))
    reference = BatchBuilder(spec.max_bytes, spec.codec)
    for key, value, headers in zip(KEYS[:50], VALUES[:50], STAMPS[:50], strict=True):
        reference.append(timestamp=timestamp_of(built.data), key=key, value=value, headers=headers)
    reference._set_producer_state(4_242, 7, 1_000)
    prebuilt = PrebuiltBatch(built)
    prebuilt._set_producer_state(4_242, 7, 1_000)
    assert prebuilt._build() == bytes(reference._build())
    batch = DefaultRecordBatch(prebuilt._build())
    assert batch.validate_crc()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (4_242, 7, 1_000)
    assert prebuilt.record_count() == 50
    assert prebuilt.closed()
