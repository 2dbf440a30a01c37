"""The whole path through a real broker: every reading published or dead-lettered, exactly
per the contracts, and committed offsets at the end offsets."""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner
from pyproj import Transformer

from processor.tools.synthetic import readings
from processor.wiring import kafka_processor
from tests.integration.broker import TestBroker
from tests.integration.kafka import (
    Topics,
    produce,
    read_all,
    settings_for,
    wait_committed_at_end,
    wait_for,
)

pytestmark = pytest.mark.integration
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
murmur2 = DefaultPartitioner()


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


async def test_every_reading_is_published_or_dead_lettered(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    sample = list(readings(20_000, sensors=300, invalid_ratio=0.02))
    header = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    await produce(bootstrap, topics.input, ((k, v) for k, v, _ in sample), headers=header)
    expected_codes = Counter(code for _, _, code in sample if code)
    valid = {v for _, v, code in sample if code is None}
    assert len(expected_codes) >= 6

    frozen = gc.get_freeze_count()
    processor = kafka_processor(settings_for(broker, topics, tmp_path))
    running = asyncio.create_task(processor.run())
    await wait_for(lambda: processor.stats.finished >= len(sample), what="all processed")
    assert gc.get_freeze_count() > frozen  # start-up's objects are out of the collector's way
    await wait_committed_at_end(bootstrap, topics)
    processor.stop()
    assert await running == 0

    points = await read_all(bootstrap, topics.output, len(valid))
    letters = await read_all(bootstrap, topics.dlq, sum(expected_codes.values()))
    assert len(points) + len(letters) == len(sample)
    assert len(points) == len(valid)
    assert Counter(json.loads(r.value)["error"]["code"] for r in letters) == expected_codes

    point_schema = _validator("point.schema.json")
    letter_schema = _validator("dead-letter.schema.json")
    documents = [json.loads(r.value) for r in points]
    partitions = [0, 1, 2, 3]
    for record, document in zip(points, documents, strict=True):
        point_schema.validate(document)
        assert record.key == document["sensor_id"].encode()
        assert record.partition == murmur2(record.key, partitions, partitions)  # as send()
    for record in letters:
        letter_schema.validate(json.loads(record.value))
        assert ("traceparent", header[0][1]) in list(record.headers)

    lon = np.array([d["longitude"] for d in documents])
    lat = np.array([d["latitude"] for d in documents])
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    assert np.abs(np.array([d["x"] for d in documents]) - x).max() < 1e-6
    assert np.abs(np.array([d["y"] for d in documents]) - y).max() < 1e-6
    sources = {(d["source"]["partition"], d["source"]["offset"]) for d in documents}
    assert len(sources) == len(documents)


async def test_outputs_of_a_partition_keep_input_order(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    sample = [(k, v) for k, v, code in readings(3_000, sensors=20, invalid_ratio=0) if not code]
    await produce(bootstrap, topics.input, sample, partition=1)
    processor = kafka_processor(settings_for(broker, topics, tmp_path, batch_max_records=97))
    running = asyncio.create_task(processor.run())
    # A processor that fails (at start-up, say) ends the wait at once, with its error.
    points = await read_all(
        bootstrap, topics.output, lambda got: len(got) >= len(sample) or running.done()
    )
    processor.stop()
    assert await running == 0
    by_sensor: dict[str, list[int]] = {}
    for record in sorted(points, key=lambda r: (r.partition, r.offset)):
        document = json.loads(record.value)
        by_sensor.setdefault(document["sensor_id"], []).append(document["source"]["offset"])
    assert len(by_sensor) == 20
    for offsets in by_sensor.values():
        assert offsets == sorted(offsets)


@pytest.mark.parametrize("compression", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_outputs_read_back_whole(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path, compression: str
) -> None:
    sample = [(k, v) for k, v, code in readings(2_000, invalid_ratio=0) if not code]
    await produce(bootstrap, topics.input, sample)
    settings = settings_for(broker, topics, tmp_path, compression_type=compression)
    processor = kafka_processor(settings)
    running = asyncio.create_task(processor.run())
    points = await read_all(bootstrap, topics.output, len(sample))
    processor.stop()
    assert await running == 0
    documents = [json.loads(r.value) for r in points]
    assert Counter(d["sensor_id"].encode() for d in documents) == Counter(k for k, _ in sample)
    assert len({(d["source"]["partition"], d["source"]["offset"]) for d in documents}) == len(
        sample
    )
