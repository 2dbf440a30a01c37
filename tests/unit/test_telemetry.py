"""processor.telemetry and processor.metrics: OTEL_* configuration, instruments over Stats, and
the Prometheus text of /metrics."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from processor.config import Settings
from processor.core.stats import Stats
from processor.errors import ConfigError
from processor.messages.jobs import Framed
from processor.telemetry.otel import Telemetry, exporter_names, service_resource

from .records import reading, record

SETTINGS = Settings(http_port=0, input_topic="in", group_id="g")
OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        ({}, [], []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"], ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"], []),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"], []),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, [], ["otlp"]),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, [], []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, [], []),
    ],
)  # fmt: skip
def test_exporter_names_follow_the_environment(
    env: dict[str, str], traces: list[str], metrics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert exporter_names("traces") == traces
    assert exporter_names("metrics") == metrics


def test_nothing_configured_means_no_tracing_but_context_passed_on() -> None:
    upstream = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    telemetry = Telemetry.from_env(SETTINGS)
    try:
        assert not telemetry.tracing
        assert telemetry.begin([record(reading())], [0]).stamps is None
        traced = record(reading(), 1, headers=[("traceparent", upstream)])
        stamps = telemetry.begin([record(reading()), traced], [0]).stamps
        assert stamps == [[], [("traceparent", upstream)]]
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize(
    "env", [{"OTEL_TRACES_EXPORTER": "console"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}]
)
def test_configured_exporters_turn_tracing_on(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    telemetry = Telemetry.from_env(SETTINGS)
    try:
        assert telemetry.tracing
    finally:
        telemetry.shutdown()  # no span was made: nothing to flush


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin-nope"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
         "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)  # fmt: skip
def test_bad_exporter_configuration_names_the_variable(
    env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        Telemetry.from_env(SETTINGS)


def test_service_name_defaults_but_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert service_resource().attributes["service.name"] == "geo-stream-processor"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-7")
    assert service_resource().attributes["service.name"] == "edge-7"


def _stats() -> Stats:
    stats = Stats(buffer_max=1000)
    stats.consumed, stats.published, stats.buffered = 120, 100, 250
    stats.dead_lettered = Counter({"invalid_json": 3, "out_of_range": 2})
    stats.pauses = Counter({"buffer": 4, "partition_share": 1})
    stats.resumes = Counter({"buffer": 3})
    stats.paused_by_reason = Counter({"buffer": 2})
    stats.spill_records, stats.spill_bytes = 7, 4096
    stats.memory_used, stats.memory_budget = 200, 800
    stats.assigned = 4
    stats.committed_offsets = {("in", 0): 10, ("in", 1): 5}
    stats.end_offsets = {("in", 0): 30, ("in", 1): 5, ("in", 2): 9}
    stats.positions = {("in", 0): 25, ("in", 1): 5}
    stats.broker_reachable, stats.broker_answered = False, time.monotonic() - 30
    stats.joining = False
    return stats


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [
                    (dict(p.attributes or {}), p if isinstance(p, HistogramDataPoint) else p.value)
                    for p in metric.data.data_points
                ]
    return found


def test_instruments_read_stats_when_collected() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(SETTINGS, metric_readers=[reader])
    telemetry.watch(_stats())
    telemetry.begin([record(reading())], [0]).end(Framed(), 0.02, None)
    points = _points(reader)
    telemetry.shutdown()
    values = {name: {tuple(sorted(a.items())): v for a, v in p} for name, p in points.items()}
    assert values["processor.buffer.records"] == {(): 250}
    assert values["processor.buffer.utilization"] == {(): 0.25}
    assert values["processor.memory.utilization"] == {(): 0.25}
    assert values["processor.records.consumed"] == {(): 120}
    assert values["processor.records.dead_lettered"][(("code", "invalid_json"),)] == 3
    assert values["processor.records.dead_lettered"][(("code", "too_large"),)] == 0
    assert values["processor.pauses"][(("reason", "buffer"),)] == 4
    assert values["processor.resumes"][(("reason", "memory"),)] == 0
    assert values["processor.partitions.paused"][(("reason", "buffer"),)] == 2
    assert values["processor.consumer.lag"] == {
        (("partition", 0), ("topic", "in")): 20,
        (("partition", 1), ("topic", "in")): 0,
    }
    assert values["processor.commit.lag"][(("partition", 0), ("topic", "in"))] == 15
    [(_, histogram)] = points["processor.batch.duration"]
    assert histogram.count == 1
    assert histogram.explicit_bounds[0] == 0.001


def test_prometheus_text_parses_with_processor_names() -> None:
    telemetry = Telemetry(SETTINGS)
    telemetry.watch(_stats())
    telemetry.begin([record(reading())], [0]).end(Framed(), 0.02, None)
    text = telemetry.prometheus_text().decode()
    telemetry.shutdown()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("processor_records_consumed_total", ())] == 120
    assert samples[("processor_records_dead_lettered_total", (("code", "out_of_range"),))] == 2
    assert samples[("processor_pauses_total", (("reason", "buffer"),))] == 4
    assert samples[("processor_partitions_paused", (("reason", "buffer"),))] == 2
    assert samples[("processor_spill_size_bytes", ())] == 4096
    assert samples[("processor_memory_used_bytes", ())] == 200
    assert samples[("processor_consumer_lag", (("partition", "0"), ("topic", "in")))] == 20
    assert samples[("processor_batch_duration_seconds_count", ())] == 1
    assert samples[("processor_batch_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert samples[("processor_broker_reachable", ())] == 0
    assert samples[("processor_broker_silence_seconds", ())] >= 30
    assert samples[("processor_group_joining", ())] == 0
    names = {name for name, _ in samples}
    assert all(n.startswith("processor_") or n == "target_info" for n in names), names


def test_two_telemetries_never_mix_their_metrics() -> None:
    first, second = Telemetry(SETTINGS), Telemetry(SETTINGS)
    first.watch(_stats())
    try:
        assert b"processor_records_consumed_total 120" in first.prometheus_text()
        assert b"processor_records_consumed" not in second.prometheus_text()
    finally:
        first.shutdown()
        second.shutdown()


def test_span_processors_given_turn_tracing_on() -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(SETTINGS, span_processors=[SimpleSpanProcessor(exporter)])
    batch = telemetry.begin([record(reading())], [3])
    assert batch.stamps is not None
    batch.end(Framed(), 0.01, None)
    telemetry.shutdown()
    [span] = exporter.get_finished_spans()
    assert span.name == "process in"
    assert (span.attributes or {})["messaging.consumer.group.name"] == "g"
