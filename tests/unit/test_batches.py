"""processor.kafka.batches: produce batches built off the event loop are the ones aiokafka
builds, with and without the idempotent producer's state."""

from __future__ import annotations

import gzip
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder, MessageAccumulator
from aiokafka.producer.transaction_manager import TransactionManager
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import TopicPartition

from processor.kafka._aiokafka_private import PrebuiltBatch
from processor.kafka.batches import CODECS, KeyPartitioner, encode_batches
from processor.messages.codec import Headers
from processor.messages.jobs import BatchSpec, EncodedBatch, ProduceBatch, RecordRun

from .records import messages

PARTITIONS = (0, 1, 2, 3)
KEYS = [b"sensor-%d" % (i % 13) for i in range(2_000)]
VALUES = [b"v" * (i % 97) for i in range(2_000)]
STAMPS = [[("traceparent", b"00-%032x-%016x-01" % (i % 3, 7))] for i in range(2_000)]


@pytest.fixture(autouse=True)
def _gzip_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """gzip writes the second it compressed at into its header: two builds a second apart
    differ in those bytes alone. One fixed second for every build makes bytes comparable."""
    monkeypatch.setattr(gzip, "time", SimpleNamespace(time=lambda: 1_764_720_000.0))


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
    built = encoded(encode_batches(spec, KEYS, VALUES, STAMPS, KeyPartitioner(PARTITIONS)))
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
    built = encoded(encode_batches(spec, [b"k"] * 3, values, [[]] * 3, KeyPartitioner((0,))))
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


def encoded(batches: list[ProduceBatch]) -> list[EncodedBatch]:
    assert all(isinstance(batch, EncodedBatch) for batch in batches)
    return [batch for batch in batches if isinstance(batch, EncodedBatch)]


class OneBroker:
    """The accumulator's view of the cluster: every partition led by broker 0."""

    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 0


async def idempotent_send(batches: list[tuple[int, Any]]) -> list[tuple[int, bytes]]:
    """The bytes aiokafka's accumulator hands its sender for ``(partition, builder)`` pairs,
    as an idempotent producer sends them: producer id and epoch from InitProducerId, each
    partition's base sequence advanced by the records of its batches before."""
    manager = TransactionManager(None, 60_000)
    manager.set_pid_and_epoch(4_242, 7)
    accumulator = MessageAccumulator(OneBroker(), 1 << 20, 0, 30, txn_manager=manager)
    sent: list[tuple[int, bytes]] = []
    for partition, builder in batches:
        tp = TopicPartition("points", partition)
        await accumulator.add_batch(builder, tp, timeout=1)
        nodes, _ = accumulator.drain_by_nodes(ignore_nodes=set())
        sent.append((partition, bytes(nodes[0][tp].get_data_buffer())))
    return sent


@pytest.mark.parametrize("compression", list(CODECS))
async def test_prebuilt_batches_through_the_idempotent_accumulator_are_aiokafkas_bytes(
    compression: str,
) -> None:
    spec = BatchSpec(PARTITIONS, 16_384, CODECS[compression])
    built = encoded(encode_batches(spec, KEYS, VALUES, STAMPS, KeyPartitioner(PARTITIONS)))
    timestamp = timestamp_of(built[0].data)
    references: list[tuple[int, Any]] = []
    for batch in built:  # aiokafka's own builder, filled with the same records
        reference = BatchBuilder(spec.max_bytes, spec.codec)
        for record in DefaultRecordBatch(batch.data):
            headers = list(record.headers)
            reference.append(
                timestamp=timestamp, key=record.key, value=record.value, headers=headers
            )
        references.append((batch.partition, reference))
    ours = await idempotent_send([(b.partition, PrebuiltBatch(b.data, b.records)) for b in built])
    assert ours == await idempotent_send(references)
    sequences: dict[int, int] = {}
    for (partition, data), batch in zip(ours, built, strict=True):
        read = DefaultRecordBatch(data)
        assert read.validate_crc()
        assert (read.producer_id, read.producer_epoch) == (4_242, 7)
        assert read.base_sequence == sequences.get(partition, 0)
        sequences[partition] = read.base_sequence + batch.records
    assert sum(sequences.values()) == len(KEYS)
    assert len(built) > len(PARTITIONS)  # several batches of a partition: sequences advanced


def test_without_prebuilt_batches_a_run_per_partition_in_order() -> None:
    spec = BatchSpec(PARTITIONS, 1_024, prebuilt=False)
    runs = encode_batches(spec, KEYS, VALUES, STAMPS, KeyPartitioner(PARTITIONS))
    assert all(isinstance(run, RecordRun) for run in runs)
    assert sorted(run.partition for run in runs) == list(PARTITIONS)
    murmur2 = DefaultPartitioner()
    for run in runs:
        expected = [
            (key, value, headers)
            for key, value, headers in zip(KEYS, VALUES, STAMPS, strict=True)
            if murmur2(key, list(PARTITIONS), list(PARTITIONS)) == run.partition
        ]
        assert run.rows == expected
