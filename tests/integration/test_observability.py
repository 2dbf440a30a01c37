"""Traces, metrics and health through a real broker: traceparent end to end, /metrics during
backpressure, /healthz and /readyz over a processor's life, and `processor run` wired up."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from processor.service import exposed
from processor.telemetry.logs import JsonFormatter
from processor.telemetry.otel import Telemetry
from processor.tools.embedded_broker import free_port
from processor.tools.synthetic import readings
from processor.wiring import kafka_processor
from tests.integration.broker import TestBroker
from tests.integration.kafka import (
    Topics,
    env_for,
    http_get,
    produce,
    read_all,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration
UPSTREAM = [b"00-%032x-%016x-01" % (0xA0 + i, 0xB0 + i) for i in range(3)]


def _traceparent(i: int) -> bytes | None:
    """Three in four inputs carry one of three upstream contexts; the rest carry none."""
    return None if i % 4 == 0 else UPSTREAM[i % 3]


def _trace_and_span(record: Any) -> tuple[str, str]:
    [value] = [v for k, v in record.headers if k == "traceparent"]
    _, trace_id, span_id, _ = value.decode().split("-")
    return trace_id, span_id


async def test_traceparent_flows_from_inputs_through_batch_spans_to_outputs(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    sample = list(readings(800, sensors=40, invalid_ratio=0.05, seed=11))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        for i, (key, value, _) in enumerate(sample):
            header = _traceparent(i)
            headers = [("traceparent", header)] if header else []
            await producer.send(topics.input, value, key=key, partition=i % 2, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    by_source = {}  # (partition, offset) -> traceparent sent, in send order per partition
    offsets = [0, 0]
    for i in range(len(sample)):
        by_source[(i % 2, offsets[i % 2])] = _traceparent(i)
        offsets[i % 2] += 1

    exporter = InMemorySpanExporter()
    settings = settings_for(broker, topics, tmp_path, batch_max_records=100)
    telemetry = Telemetry(settings, span_processors=[SimpleSpanProcessor(exporter)])
    processor = kafka_processor(settings, observer=telemetry)
    async with exposed(processor, telemetry, "127.0.0.1", 0):
        running = asyncio.create_task(processor.run())
        await wait_for(lambda: processor.stats.finished >= len(sample), what="all processed")
        processor.stop()
        assert await running == 0

    spans = exporter.get_finished_spans()
    assert spans, "one span per batch"
    batch_spans = {f"{s.context.span_id:016x}": s for s in spans}
    assert sum((s.attributes or {})["messaging.batch.message_count"] for s in spans) == len(sample)
    for span in spans:
        attributes = span.attributes or {}
        assert span.name == f"process {topics.input}"
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.consumer.group.name"] == topics.group
    linked = {(link.context.trace_id, link.context.span_id) for s in spans for link in s.links}
    assert linked == {(0xA0 + i, 0xB0 + i) for i in range(3)}

    invalid = sum(1 for *_, code in sample if code)
    outputs = await read_all(bootstrap, topics.output, len(sample) - invalid)
    letters = await read_all(bootstrap, topics.dlq, invalid)
    assert len(outputs) + len(letters) == len(sample)
    for record in [*outputs, *letters]:
        document = json.loads(record.value)
        sent = by_source[(document["source"]["partition"], document["source"]["offset"])]
        trace_id, span_id = _trace_and_span(record)
        span = batch_spans[span_id]  # the span of the batch that produced it
        if sent is None:
            assert trace_id == f"{span.context.trace_id:032x}"
        else:
            assert trace_id == sent.decode().split("-")[1]


def _passed_on(i: int) -> bytes | None:
    """One in three inputs carries no context; the others one of five, sampled or not."""
    if i % 3 == 0:
        return None
    return b"00-%032x-%016x-%s" % (0xC0 + i % 5, 0xD0 + i % 5, b"01" if i % 3 == 1 else b"00")


@pytest.mark.parametrize("observer", ["OTEL_TRACES_EXPORTER=none", "no observer"])
async def test_without_a_trace_exporter_outputs_and_dead_letters_keep_upstream_context(
    broker: TestBroker,
    topics: Topics,
    tmp_path: Path,
    observer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap = broker.bootstrap_servers
    sample = list(readings(400, sensors=40, invalid_ratio=0.1, seed=5))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        for i, (key, value, _) in enumerate(sample):
            header = _passed_on(i)
            headers = [("traceparent", header), ("origin", b"lab")] if header else []
            await producer.send(topics.input, value, key=key, partition=i % 2, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    sent = {(i % 2, i // 2): _passed_on(i) for i in range(len(sample))}  # (partition, offset)

    settings = settings_for(broker, topics, tmp_path, batch_max_records=64)
    telemetry = None
    if observer == "no observer":
        processor = kafka_processor(settings)
    else:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        telemetry = Telemetry.from_env(settings)
        assert not telemetry.tracing
        processor = kafka_processor(settings, observer=telemetry)
    running = asyncio.create_task(processor.run())
    await wait_for(lambda: processor.stats.finished >= len(sample), what="all processed")
    processor.stop()
    assert await running == 0
    if telemetry is not None:
        telemetry.shutdown()

    invalid = sum(1 for *_, code in sample if code)
    assert invalid
    outputs = await read_all(bootstrap, topics.output, len(sample) - invalid)
    letters = await read_all(bootstrap, topics.dlq, invalid)
    assert len(outputs) + len(letters) == len(sample)
    for records in (outputs, letters):
        flags = set()
        for record in records:
            source = json.loads(record.value)["source"]
            upstream = sent[(source["partition"], source["offset"])]
            carried = [v for k, v in record.headers if k == "traceparent"]
            assert carried == ([upstream] if upstream else [])  # trace, parent, sampled flag
            flags.add(upstream[-2:] if upstream else None)
        assert flags == {b"01", b"00", None}  # sampled, unsampled and no upstream context


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _assert_context_and_no_payloads(records: list[logging.LogRecord]) -> None:
    """Pause lines name their partition; no line carries a sensor id or a measurement."""
    lines = [JsonFormatter().format(r) for r in records]
    assert any('"message":"pause"' in line and '"partition":' in line for line in lines)
    assert not re.search(r"(sierra|alps|murray|fiji)-\d{5}|pm25", "\n".join(lines))


async def test_metrics_and_health_while_backpressure_engages(
    broker: TestBroker,
    bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="processor")
    count = await produce(
        bootstrap, topics.input, ((k, v) for k, v, _ in readings(3_000, invalid_ratio=0.02))
    )
    settings = settings_for(
        broker, topics, tmp_path, buffer_max_records=200, batch_max_records=50,
        stage_delay_ms=15,
    )  # fmt: skip
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings, metric_readers=[reader])
    processor = kafka_processor(settings, observer=telemetry)
    port = free_port()
    async with exposed(processor, telemetry, "127.0.0.1", port) as bound:
        assert bound == port
        assert (await http_get(port, "/healthz"))[0] == 200  # starting counts as alive
        assert (await http_get(port, "/readyz"))[0] == 503
        running = asyncio.create_task(processor.run())

        async def ready() -> bool:
            return (await http_get(port, "/readyz"))[0] == 200

        await wait_for(ready, what="ready once in the group")

        async def paused() -> bool:
            samples = _samples((await http_get(port, "/metrics"))[1].decode())
            return any(v for (n, _), v in samples.items() if n == "processor_pauses_total")

        await wait_for(paused, what="a pause counted in /metrics")
        status, body = await http_get(port, "/metrics")
        assert status == 200
        during = _samples(body.decode())
        assert during[("processor_buffer_capacity", ())] == 200
        assert 0 <= during[("processor_buffer_utilization", ())] <= 1
        assert during[("processor_memory_budget_bytes", ())] > 0
        assert ("processor_partitions_paused", (("reason", "buffer"),)) in during
        assert during[("processor_records_consumed_total", ())] > 0
        assert during[("processor_broker_reachable", ())] == 1
        assert (await http_get(port, "/healthz"))[0] == 200

        await wait_for(lambda: processor.stats.finished >= count, what="all processed")
        await wait_for(
            lambda: (
                processor.stats.committed_offsets
                and processor.stats.committed_offsets == processor.stats.end_offsets
            ),
            what="lag back to zero",
        )
        after = _samples((await http_get(port, "/metrics"))[1].decode())
        processor.stop()
        assert await running == 0
        assert (await http_get(port, "/healthz"))[0] == 503
        assert (await http_get(port, "/readyz"))[0] == 503

    stats = processor.stats
    assert after[("processor_records_consumed_total", ())] == count
    published = after[("processor_records_published_total", ())]
    dead = sum(v for (n, _), v in after.items() if n == "processor_records_dead_lettered_total")
    assert published + dead == count == stats.finished
    assert after[("processor_batch_duration_seconds_count", ())] == stats.batches
    lags = {k: v for k, v in after.items() if k[0] == "processor_consumer_lag"}
    assert lags
    assert set(lags.values()) == {0}
    pauses = sum(v for (n, _), v in after.items() if n == "processor_pauses_total")
    assert pauses == sum(stats.pauses.values()) > 0
    _assert_context_and_no_payloads(caplog.records)
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert {"processor.buffer.records", "processor.pauses", "processor.batch.duration"} <= names


async def test_processor_run_serves_http_and_exports_spans_as_configured(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    count = await produce(
        bootstrap,
        topics.input,
        ((k, v) for k, v, _ in readings(500, invalid_ratio=0)),
        headers=[("traceparent", UPSTREAM[0])],
    )
    port = free_port()
    settings = settings_for(broker, topics, tmp_path, http_port=port, http_host="127.0.0.1")
    env = {**env_for(settings), "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "t-1"}
    with (tmp_path / "run.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "processor.cli", "run", env=env, stdout=log, stderr=log
        )
        try:

            async def published() -> bool:
                try:
                    body = (await http_get(port, "/metrics"))[1].decode()
                except OSError:
                    return False
                return _samples(body).get(("processor_records_published_total", ())) == count

            await wait_for(published, what="all published, seen through /metrics")
            assert (await http_get(port, "/readyz"))[0] == 200
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 60) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = (tmp_path / "run.log").read_text()
    assert f'"name": "process {topics.input}"' in text
    assert '"service.name": "t-1"' in text
    assert UPSTREAM[0].decode().split("-")[1] in text  # the link to the upstream context
