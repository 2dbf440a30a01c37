"""Helpers for integration tests: produce, read back, offsets, processes. No mocks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from processor.config import Settings
from processor.durations import format_ms, is_duration
from processor.kafka.admin import create_topics
from processor.tools.embedded_broker import FAST_GROUP
from tests.integration.broker import TestBroker

DEADLINE_S = 120.0
POLL_S = 0.02  # how often a synchronous wait looks again


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dlq: str
    group: str

    @classmethod
    def fresh(cls) -> Topics:
        tag = uuid.uuid4().hex[:8]
        return cls(f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"group-{tag}")

    async def create(self, bootstrap: str, partitions: int = 4) -> Topics:
        await create_topics(bootstrap, [self.input, self.output, self.dlq], partitions)
        return self


def settings_for(broker: TestBroker, topics: Topics, tmp: Path, **overrides: Any) -> Settings:
    """The processor's settings for a test against ``broker``: the idempotent producer as the
    broker allows (production's default where it can), and short group timeouts (6 s is
    also Kafka's and Redpanda's least session timeout, so they hold for every broker)."""
    values: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap_servers,
        "input_topic": topics.input,
        "output_topic": topics.output,
        "dlq_topic": topics.dlq,
        "group_id": topics.group,
        "enable_idempotence": broker.supports_idempotence,
        "spill_dir": tmp / "spill",
        "http_port": 0,
        **FAST_GROUP,
    }
    values.update(overrides)
    return Settings(**values)


def env_for(settings: Settings) -> dict[str, str]:
    """The same settings as PROCESSOR_* variables, for a `processor run` subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"PROCESSOR_{name.upper()}"] = _env_text(name, value)
    env["PROCESSOR_LOG_FORMAT"] = "json"
    return env


def _env_text(name: str, value: Any) -> str:
    """A setting's value as its variable spells it: booleans lower case, lists with commas,
    durations with their unit, tables as JSON."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return format_ms(value) if is_duration(Settings.model_fields[name]) else str(value)


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=10, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    count = 0
    try:
        for key, value in records:
            await producer.send(topic, value, key=key, partition=partition, headers=headers)
            count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


async def read_all(
    bootstrap: str,
    topic: str,
    expected: int | Callable[[list[Any]], bool] | None,
    deadline_s: float = DEADLINE_S,
) -> list[Any]:
    """Every record of ``topic`` from the beginning, once ``expected`` is met (or the deadline).

    ``expected=None`` reads what the topic holds now: up to each partition's high watermark.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await asyncio.sleep(0.05)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        next_offset = dict.fromkeys(tps, 0)

        def caught_up(_: list[Any]) -> bool:
            marks = {tp: consumer.highwater(tp) for tp in tps}
            return all(m is not None and next_offset[tp] >= m for tp, m in marks.items())

        if expected is None:
            done = caught_up
        elif callable(expected):
            done = expected
        else:
            count = expected
            done = lambda got: len(got) >= count  # noqa: E731
        end = time.monotonic() + deadline_s
        while not done(records) and time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, part in batch.items():
                records.extend(part)
                next_offset[tp] = part[-1].offset + 1
        return records
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """High watermarks as fetch responses report them.

    (The embedded Tansu build answers ListOffsets(latest) wrongly, so ``end_offsets()`` is
    not used; a fetch's high watermark is right on every broker.)
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = time.monotonic() + DEADLINE_S
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < end:
            await consumer.getmany(timeout_ms=200, max_records=1)
        return {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets (OffsetFetch through a consumer that does not join)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        found = {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await consumer.stop()
    return {p: offset for p, offset in found.items() if offset is not None}


async def wait_committed_at_end(
    bootstrap: str, topics: Topics, deadline_s: float = DEADLINE_S
) -> None:
    """Wait until the group's committed offsets equal the input's end offsets."""
    ends = await end_offsets(bootstrap, topics.input)

    async def at_end() -> bool:
        return await committed_offsets(bootstrap, topics.group, topics.input) == ends

    await wait_for(at_end, deadline_s, "commits at the end offsets")


async def wait_for(
    condition: Callable[[], Any], deadline_s: float = DEADLINE_S, what: str = "condition"
) -> None:
    """Poll an (a)sync condition until true; fail the test at the deadline. No fixed sleeps."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of a GET on the processor's HTTP port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def poll_until(condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> bool:
    """Check ``condition`` every ``POLL_S`` until it holds (True) or the deadline passes
    (False): the synchronous twin of :func:`wait_for`, for tests that drive subprocesses."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(POLL_S)
    return True


class ProcessorProcess:
    """`processor run` as a real subprocess, with its JSON log captured to a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "processor.cli", "run"],
            env=env_for(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    async def wait(self, deadline_s: float = DEADLINE_S) -> int:
        await wait_for(lambda: self.process.poll() is not None, deadline_s, "process exit")
        self._log.close()
        return int(self.process.returncode)

    def stop_now(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (a line being written is left out)."""
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found


async def topic_names(bootstrap: str) -> set[str]:
    """The topics the broker has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()
