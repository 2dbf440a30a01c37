"""Input as production clients write it: librdkafka (confluent-kafka) batches compressed with
each codec Kafka defines, with headers, processed whole by `processor run`; and a batch that
cannot be decoded stops the processor with one line naming it, before it and on every restart."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaProducer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from confluent_kafka import Producer

from processor.kafka._aiokafka_private import PrebuiltBatch
from processor.kafka.batches import CODECS, KeyPartitioner, encode_batches
from processor.messages.jobs import BatchSpec, EncodedBatch
from processor.tools.embedded_broker import EmbeddedBroker
from processor.tools.synthetic import readings
from tests.integration.broker import TestBroker
from tests.integration.kafka import (
    ProcessorProcess,
    Topics,
    committed_offsets,
    read_all,
    settings_for,
    wait_committed_at_end,
)

pytestmark = pytest.mark.integration
UPSTREAM = [b"00-%032x-%016x-01" % (0xC0 + i, 0xD0 + i) for i in range(3)]


def _headers(i: int) -> list[tuple[str, bytes]]:
    return [("traceparent", UPSTREAM[i % 3]), ("site", b"site-%d" % i)]


def produce_with_librdkafka(
    bootstrap: str, topic: str, codec: str, sample: list[tuple[bytes | None, bytes, Any]]
) -> list[tuple[int, int]]:
    """Each reading's (partition, offset), sent by librdkafka with ``compression.type``."""
    where: list[tuple[int, int]] = [(-1, -1)] * len(sample)
    failures: list[Any] = []

    def report(index: int) -> Any:
        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                failures.append(error)
            else:
                where[index] = (message.partition(), message.offset())

        return delivered

    config = {"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20}
    producer = Producer(config, logger=logging.getLogger("librdkafka"))
    for i, (key, value, _) in enumerate(sample):
        producer.produce(topic, value, key=key, headers=_headers(i), on_delivery=report(i))
    assert producer.flush(60) == 0
    assert failures == []
    return where


async def stored_codecs(bootstrap: str, topic: str) -> set[int]:
    """The codec ids of the record batches a topic holds (a raw fetch from offset 0)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    codecs: set[int] = set()
    try:
        partitions = await client._wait_on_metadata(topic)
        for partition in partitions:
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            request = FetchRequest(1000, 1, 1 << 24, 0, [(topic, [(partition, 0, 1 << 24)])])
            response = await client.send(leader, request)
            for _, answers in response.topics:
                for answer in answers:
                    batches = MemoryRecords(answer[-1])
                    while batches.has_next():
                        codecs.add(batches.next_batch().compression_type)
    finally:
        await client.close()
    return codecs


def _trace_id(headers: Any) -> bytes:
    [value] = [v for k, v in headers if k == "traceparent"]
    return bytes(value).split(b"-")[1]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_librdkafka_input_with_every_codec_is_processed_whole_with_its_headers(
    broker: TestBroker,
    topics: Topics,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    codec: str,
) -> None:
    bootstrap = broker.bootstrap_servers
    sample = list(readings(1_200, sensors=60, invalid_ratio=0.05, seed=23))
    where = await asyncio.to_thread(produce_with_librdkafka, bootstrap, topics.input, codec, sample)
    assert await stored_codecs(bootstrap, topics.input) == {CODECS[codec]}
    index_of = {source: i for i, source in enumerate(where)}
    invalid = sum(1 for _, _, code in sample if code)
    assert invalid > 20

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")  # so points carry a traceparent
    process = ProcessorProcess(settings_for(broker, topics, tmp_path), tmp_path / "run.log")
    try:
        points = await read_all(bootstrap, topics.output, len(sample) - invalid)
        assert len(points) == len(sample) - invalid, process.log()[-4000:]
        letters = await read_all(bootstrap, topics.dlq, invalid)
        assert len(letters) == invalid, process.log()[-4000:]
        await wait_committed_at_end(bootstrap, topics)
        process.signal(signal.SIGTERM)
        assert await process.wait() == 0
    finally:
        process.stop_now()
    assert "Traceback" not in process.log()

    sources = []
    for record in points:
        document = json.loads(record.value)
        i = index_of[(document["source"]["partition"], document["source"]["offset"])]
        assert sample[i][2] is None
        assert document["sensor_id"].encode() == sample[i][0]
        assert _trace_id(record.headers) == _trace_id(_headers(i))  # the input's trace goes on
        sources.append(i)
    for record in letters:
        document = json.loads(record.value)
        i = index_of[(document["source"]["partition"], document["source"]["offset"])]
        assert document["error"]["code"] == sample[i][2]
        assert ("site", b"site-%d" % i) in list(record.headers)  # input headers carried over
        sources.append(i)
    assert sorted(sources) == list(range(len(sample)))  # each reading exactly once


@pytest.fixture(scope="module")
def storing_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded broker of this module's own, even when the suite runs against another
    cluster: Tansu stores a produced batch as it is, so a corrupt one can be staged (a Kafka
    broker checks the CRC on produce and refuses it)."""
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("storing") / "tansu.log") as broker:
        yield broker.bootstrap_servers


async def _produce_batches(bootstrap: str, topic: str, batches: list[EncodedBatch]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for batch in batches:
            await (
                await producer.send_batch(
                    PrebuiltBatch(batch.data, batch.records), topic, partition=0
                )
            )
    finally:
        await producer.stop()


def zstd_batch(sample: list[tuple[bytes | None, bytes, Any]]) -> EncodedBatch:
    spec = BatchSpec((0,), 1 << 20, CODECS["zstd"])
    keys = [key for key, _, _ in sample]
    values = [value for _, value, _ in sample]
    headers = [_headers(i) for i in range(len(sample))]
    [batch] = encode_batches(spec, keys, values, headers, KeyPartitioner((0,)))
    assert isinstance(batch, EncodedBatch)
    return batch


def _run_log(process: ProcessorProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.log().splitlines() if line.startswith("{")]


async def test_a_corrupt_batch_stops_the_processor_before_it_with_one_line_every_time(
    storing_broker: str, tmp_path: Path
) -> None:
    bootstrap = storing_broker
    topics = await Topics.fresh().create(bootstrap, partitions=1)
    sample = [r for r in readings(60, sensors=10, invalid_ratio=0) if r[2] is None]
    broken = zstd_batch(sample[40:50])
    data = bytearray(broken.data)
    data[-8] ^= 0xFF  # bits flipped after the producer's CRC: what disk or wire rot does
    batches = [zstd_batch(sample[:40]), replace(broken, data=bytes(data)), zstd_batch(sample[50:])]
    await _produce_batches(bootstrap, topics.input, batches)
    settings = settings_for(TestBroker.embedded(bootstrap), topics, tmp_path)
    line = (
        f"fatal: cannot decode the record batch of topic {topics.input} partition 0 "
        "at offset 40: CRC mismatch (corrupt bytes)"
    )

    for run in range(2):  # the first run, then a restart
        process = ProcessorProcess(settings, tmp_path / f"run-{run}.log")
        try:
            exit_code = await process.wait()
        finally:
            process.stop_now()
        assert exit_code == 1, process.log()
        logged = _run_log(process)
        assert [entry["message"] for entry in logged].count(line) == 1, process.log()
        assert not any("exception" in entry for entry in logged)
        assert "Traceback" not in process.log()
        # Everything before the broken batch is published and committed, once; nothing after.
        points = await read_all(bootstrap, topics.output, None)
        offsets = sorted(json.loads(record.value)["source"]["offset"] for record in points)
        assert offsets == list(range(40))
        assert await committed_offsets(bootstrap, topics.group, topics.input) == {0: 40}
