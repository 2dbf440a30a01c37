"""Dead letters through a real broker carry the complete payload: deep nesting is a reason
of its own, and only an input at or over the maximum payload size is cut, saying so."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import jsonschema
import pytest

from processor.wiring import kafka_processor
from tests.integration.broker import TestBroker
from tests.integration.kafka import Topics, produce, read_all, settings_for, wait_for

pytestmark = pytest.mark.integration
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "dead-letter.schema.json"
MAX_BYTES = 200_000
KEPT = 4096


def _deep(size: int) -> bytes:
    """A reading whose measurement is nested far deeper than any decoder allows."""
    head = b'{"sensor_id": "deep-1", "timestamp": "2026-11-23T10:00:00Z", "latitude": 1, '
    depth = (size - len(head) - len(b'"m": }')) // 2
    return head + b'"m": ' + b"[" * depth + b"]" * depth + b"}"


def _invalid(size: int, fill: bytes = b"x") -> bytes:
    """Invalid JSON of exactly ``size`` bytes."""
    return (b'{"sensor_id": "big-1", "blob": "' + fill * size)[:size]


async def test_dead_letters_carry_the_whole_payload_below_the_maximum_size(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    inputs = [
        (_deep(10_240), "too_deep"),
        (_invalid(MAX_BYTES - 1), "invalid_json"),
        (_invalid(MAX_BYTES), "invalid_json"),
        (_invalid(MAX_BYTES, fill=b"\xe2\x82\xac"), "invalid_json"),  # cut inside a char
        (_invalid(MAX_BYTES + 1, fill=b"\xff"), "too_large"),
        (_invalid(3 * MAX_BYTES), "too_large"),
    ]
    await produce(bootstrap, topics.input, ((b"k", v) for v, _ in inputs), partition=0)
    settings = settings_for(broker, topics, tmp_path, max_payload_bytes=MAX_BYTES)
    processor = kafka_processor(settings)
    running = asyncio.create_task(processor.run())
    await wait_for(lambda: processor.stats.finished >= len(inputs), what="all processed")
    processor.stop()
    assert await running == 0

    letters = await read_all(bootstrap, topics.dlq, len(inputs))
    schema = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    by_offset = {}
    for record in letters:
        letter = json.loads(record.value)
        schema.validate(letter)
        by_offset[letter["source"]["offset"]] = letter
    assert sorted(by_offset) == list(range(len(inputs)))
    for offset, (payload, code) in enumerate(inputs):
        letter = by_offset[offset]
        assert letter["error"]["code"] == code
        carried = (
            letter["payload"].encode()
            if "payload" in letter
            else base64.b64decode(letter["payload_b64"])
        )
        if len(payload) < MAX_BYTES:
            assert carried == payload
            assert letter.keys() == {"error", "source", "payload"}
        else:
            assert payload.startswith(carried)
            assert KEPT - 3 <= len(carried) <= KEPT
            assert letter["payload_truncated"] is True
            assert letter["payload_size"] == len(payload)
            assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert "payload" in by_offset[3]  # text, not base64, though the cut split a character
    assert "payload_b64" in by_offset[4]
