"""The core path with aiokafka's fast paths switched off (``PROCESSOR_AIOKAFKA_FAST_PATHS=false``):
consume, stage, publish, acknowledge and commit through aiokafka's public API only, as the
processor runs when its start-up check finds aiokafka's internals changed."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from processor.messages.encode import ERROR_HEADER
from processor.tools.synthetic import readings
from tests.integration.broker import TestBroker
from tests.integration.kafka import (
    ProcessorProcess,
    Topics,
    end_offsets,
    produce,
    read_all,
    settings_for,
    wait_committed_at_end,
)

pytestmark = pytest.mark.integration
murmur2 = DefaultPartitioner()
SITE = ("site", b"north")


async def test_every_record_is_published_or_dead_lettered_and_committed_through_public_api(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    headed = list(readings(3_000, sensors=50, invalid_ratio=0.05, seed=1))
    bare = list(readings(3_000, sensors=50, invalid_ratio=0.05, seed=2))
    await produce(bootstrap, topics.input, ((k, v) for k, v, _ in headed), headers=[SITE])
    await produce(bootstrap, topics.input, ((k, v) for k, v, _ in bare))
    sample = headed + bare
    expected_codes = Counter(code for _, _, code in sample if code)
    invalid = sum(expected_codes.values())
    assert invalid > 100

    settings = settings_for(broker, topics, tmp_path, aiokafka_fast_paths=False)
    process = ProcessorProcess(settings, tmp_path / "run.log")
    try:
        points = await read_all(bootstrap, topics.output, len(sample) - invalid)
        letters = await read_all(bootstrap, topics.dlq, invalid)
        await wait_committed_at_end(bootstrap, topics)
        process.signal(signal.SIGTERM)
        assert await process.wait() == 0, process.log()[-4000:]
    finally:
        process.stop_now()
    messages = [line.get("message", "") for line in process.lines()]
    assert any("fast paths off (PROCESSOR_AIOKAFKA_FAST_PATHS=false)" in m for m in messages)
    assert not any("fast paths on" in m for m in messages)
    assert "Traceback" not in process.log()

    assert len(points) == len(sample) - invalid
    assert len(letters) == invalid
    sources: Counter[tuple[int, int]] = Counter()
    everything = [0, 1, 2, 3]
    for record in points:
        document = json.loads(record.value)
        assert record.key == document["sensor_id"].encode()
        assert record.partition == murmur2(record.key, everything, everything)  # as send()
        sources[(document["source"]["partition"], document["source"]["offset"])] += 1
    codes: Counter[str] = Counter()
    for record in letters:
        document = json.loads(record.value)
        code = document["error"]["code"]
        codes[code] += 1
        assert list(record.headers) in (
            [SITE, (ERROR_HEADER, code.encode())],  # the input's own headers carried over
            [(ERROR_HEADER, code.encode())],
        )
        if record.key is not None:
            assert record.partition == murmur2(record.key, everything, everything)
        sources[(document["source"]["partition"], document["source"]["offset"])] += 1
    assert codes == expected_codes
    assert sum(1 for r in letters if SITE in list(r.headers)) == sum(1 for *_, c in headed if c)
    ends = await end_offsets(bootstrap, topics.input)
    every_input = {(p, offset) for p, end in ends.items() for offset in range(end)}
    assert set(sources) == every_input  # each input once: published or dead-lettered
    assert set(sources.values()) == {1}
