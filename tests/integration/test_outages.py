"""Broker outages and slow joins, for real: a frozen broker (SIGSTOP), every connection reset
(a proxy in front of the broker), a long group join. Each test has a broker of its own, so
freezing or cutting it disturbs no other test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from processor.kafka.probe import broker_probe
from processor.tools.embedded_broker import EmbeddedBroker, free_port
from processor.tools.synthetic import readings
from tests.integration.broker import TestBroker
from tests.integration.kafka import (
    ProcessorProcess,
    Topics,
    http_get,
    produce,
    read_all,
    settings_for,
    wait_for,
)
from tests.integration.proxy import ResettingProxy

pytestmark = pytest.mark.integration
UNREACHABLE = "broker unreachable"
BACK = "broker reachable again"


@dataclass
class Probes:
    """What /healthz and /readyz answered, polled every 0.1 s for the whole test."""

    port: int
    healthz: list[int] = field(default_factory=list)
    readyz: list[tuple[int, str | None]] = field(default_factory=list)

    async def poll(self) -> None:
        while True:
            with contextlib.suppress(OSError):  # not listening yet
                status, _ = await http_get(self.port, "/healthz")
                self.healthz.append(status)
                status, body = await http_get(self.port, "/readyz")
                self.readyz.append((status, json.loads(body).get("reason")))
            await asyncio.sleep(0.1)

    def ready(self) -> bool:
        return bool(self.readyz) and self.readyz[-1][0] == 200

    def saw(self, reason: str) -> bool:
        return (503, reason) in self.readyz


@contextlib.asynccontextmanager
async def probing(port: int) -> AsyncIterator[Probes]:
    probes = Probes(port)
    task = asyncio.create_task(probes.poll())
    try:
        yield probes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def running(settings: Any, log: Path) -> Iterator[ProcessorProcess]:
    process = ProcessorProcess(settings, log)
    try:
        yield process
    finally:
        process.stop_now()


def _messages(process: ProcessorProcess, start: str) -> list[dict[str, Any]]:
    return [line for line in process.lines() if line["message"].startswith(start)]


async def _produce(bootstrap: str, topic: str, count: int, seed: int) -> int:
    sample = readings(count, invalid_ratio=0, seed=seed)
    return await produce(bootstrap, topic, ((k, v) for k, v, _ in sample))


async def _all_published(bootstrap: str, topics: Topics, count: int) -> None:
    def sources(records: list[Any]) -> set[tuple[int, int]]:
        found = (json.loads(r.value)["source"] for r in records)
        return {(source["partition"], source["offset"]) for source in found}

    points = await read_all(bootstrap, topics.output, lambda got: len(sources(got)) >= count)
    assert len(sources(points)) == count


async def _stop(process: ProcessorProcess) -> None:
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0


async def test_a_frozen_broker_is_one_warning_then_one_line_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap_servers
        topics = await Topics.fresh().create(bootstrap)
        before = await _produce(bootstrap, topics.input, 2_000, seed=1)
        port = free_port()
        # Slow batches: processing is still under way when the broker freezes.
        settings = settings_for(
            TestBroker.embedded(bootstrap), topics, tmp_path, http_port=port, http_host="127.0.0.1",
            stage_delay_ms=100, batch_max_records=100,
        )  # fmt: skip
        with running(settings, tmp_path / "run.log") as process:
            async with probing(port) as probes:
                await wait_for(probes.ready, what="ready")
                os.kill(broker.pid, signal.SIGSTOP)
                try:
                    await wait_for(
                        lambda: _messages(process, UNREACHABLE), 30, "the unreachable warning"
                    )
                    await wait_for(lambda: probes.saw("broker_unreachable"), 10, "/readyz 503")
                finally:
                    os.kill(broker.pid, signal.SIGCONT)
                await wait_for(lambda: _messages(process, BACK), 30, "the reachable line")
                after = await _produce(bootstrap, topics.input, 500, seed=2)
                await _all_published(bootstrap, topics, before + after)
                await wait_for(probes.ready, what="ready again")
            await _stop(process)
    [warning] = _messages(process, UNREACHABLE)
    assert warning["level"] == "warning"
    assert warning["bootstrap_servers"] == bootstrap
    assert datetime.fromisoformat(warning["since"]) < datetime.fromisoformat(warning["time"])
    [back] = _messages(process, BACK)
    assert back["unreachable_s"] >= settings.unreachable_after_s
    assert set(probes.healthz) == {200}


async def test_connection_resets_log_a_few_lines_not_hundreds(tmp_path: Path) -> None:
    proxy = await ResettingProxy(free_port(), free_port()).start()
    try:
        with EmbeddedBroker(
            port=proxy.target_port, log_path=tmp_path / "tansu.log", advertised_port=proxy.port
        ) as broker:
            bootstrap = broker.bootstrap_servers
            topics = await Topics.fresh().create(bootstrap)
            before = await _produce(bootstrap, topics.input, 1_000, seed=3)
            port = free_port()
            settings = settings_for(
                TestBroker.embedded(bootstrap),
                topics,
                tmp_path,
                http_port=port,
                http_host="127.0.0.1",
            )
            with running(settings, tmp_path / "run.log") as process:
                async with probing(port) as probes:
                    await wait_for(probes.ready, what="ready")
                    await _all_published(bootstrap, topics, before)
                    quiet = len(process.lines())
                    proxy.cut()
                    # Reset until the client has retried hundreds of times (base code: 1,095
                    # lines in 15 s, about two per refused connection) and the warning is out.
                    await wait_for(
                        lambda: proxy.refused >= 300 and _messages(process, UNREACHABLE),
                        60,
                        "the unreachable warning after 300 refused connections",
                    )
                    during = process.lines()[quiet:]
                    proxy.restore()
                    await wait_for(lambda: _messages(process, BACK), 30, "the reachable line")
                    after = await _produce(bootstrap, topics.input, 500, seed=4)
                    await _all_published(bootstrap, topics, before + after)
                await _stop(process)
    finally:
        await proxy.close()
    client = [line for line in during if line["logger"].startswith("aiokafka")]
    assert len(client) <= 3, client
    assert len(during) <= 5, during
    [back] = _messages(process, BACK)
    assert back["client_messages_suppressed"] >= 100
    assert set(probes.healthz) == {200}
    assert probes.saw("broker_unreachable")


async def test_a_slow_group_join_is_alive_not_ready_and_logged(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap_servers
        topics = await Topics.fresh().create(bootstrap)
        count = await _produce(bootstrap, topics.input, 200, seed=5)
        port = free_port()
        # This broker answers a JoinGroup after about half the session timeout: ~35 s, longer
        # than the 30 s after which the old /healthz failed a fetch loop waiting in getmany.
        settings = settings_for(
            TestBroker.embedded(bootstrap), topics, tmp_path, http_port=port, http_host="127.0.0.1",
            session_timeout_ms=70_000, heartbeat_interval_ms=3_000,
        )  # fmt: skip
        with running(settings, tmp_path / "run.log") as process:
            async with probing(port) as probes:
                await wait_for(lambda: probes.saw("joining"), what="/readyz 503 joining")
                await wait_for(
                    lambda: _messages(process, "waiting for a partition assignment"),
                    what="the waiting line",
                )
                await wait_for(probes.ready, what="ready once assigned")
                await wait_for(
                    lambda: _messages(process, "partition assignment received after"),
                    what="the line that ends the wait",
                )
                await _all_published(bootstrap, topics, count)
            await _stop(process)
    [joined] = _messages(process, "partition assignment received after")
    assert joined["waited_s"] > 30
    assert set(probes.healthz) == {200}
    assert {reason for status, reason in probes.readyz if status == 503} <= {"starting", "joining"}


async def test_a_real_consumer_gets_the_metadata_probe(bootstrap: str, topics: Topics) -> None:
    """The fence's self-check against the installed aiokafka: the cheap probe, and it answers."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=topics.group)
    await consumer.start()
    try:
        consumer.subscribe([topics.input])
        probe = broker_probe(consumer)
        assert probe.kind == "subscribed_topics"
        assert await probe()
    finally:
        await consumer.stop()
