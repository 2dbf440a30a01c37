"""processor.tracing: batch spans per the messaging conventions, links to upstream contexts,
and the traceparent every output carries."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NoOpTracer, SpanKind, StatusCode

from processor.geo.spatial import Reprojector
from processor.geo.stage import SpatialStage
from processor.messages.encode import ERROR_HEADER
from processor.messages.jobs import Framed
from processor.telemetry.tracing import BatchTracer

from .records import process, reading, record

UPSTREAM = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
STAGE = SpatialStage(Reprojector("EPSG:3857"), 1_048_576)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> BatchTracer:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return BatchTracer(provider.get_tracer("test"), "sensor.readings", "geo")


def _parts(value: bytes) -> tuple[str, str, str, str]:
    version, trace_id, span_id, flags = value.decode().split("-")
    return version, trace_id, span_id, flags


def test_one_consumer_span_per_batch_with_messaging_attributes(
    tracer: BatchTracer, exporter: InMemorySpanExporter
) -> None:
    records = [record(reading(), offset=i, partition=2) for i in range(5)]
    batch = tracer.begin(records, [2])
    result = process(STAGE, records, batch.stamps)
    batch.end(result.result, None)
    [span] = exporter.get_finished_spans()
    assert span.name == "process sensor.readings"
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is None
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "sensor.readings",
        "messaging.consumer.group.name": "geo",
        "messaging.batch.message_count": 5,
        "messaging.destination.partition.id": "2",
        "processor.partitions": (2,),
        "processor.batch.published": 5,
        "processor.batch.dead_lettered": 0,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_outputs_carry_the_batch_span_and_keep_upstream_trace_ids(
    tracer: BatchTracer, exporter: InMemorySpanExporter
) -> None:
    other = b"00-11111111111111111111111111111111-2222222222222222-00"
    records = [
        record(reading(sensor_id="a"), 0, headers=[("traceparent", UPSTREAM)]),
        record(reading(sensor_id="b"), 1),
        record(reading(sensor_id="c"), 2, headers=[("traceparent", other), ("x", b"1")]),
        record(b"not json", 3, headers=[("traceparent", UPSTREAM), ("x", b"2")]),
        record(reading(sensor_id="e"), 4, headers=[("traceparent", b"garbage")]),
    ]
    batch = tracer.begin(records, [0, 1])
    result = process(STAGE, records, batch.stamps)
    batch.end(result.result, None)
    [span] = exporter.get_finished_spans()
    own_trace = f"{span.context.trace_id:032x}"
    own_span = f"{span.context.span_id:016x}"
    stamped = [dict(headers)["traceparent"] for _, _, headers in result.points]
    assert [_parts(v) for v in stamped] == [
        ("00", TRACE_ID, own_span, "01"),
        ("00", own_trace, own_span, "01"),
        ("00", "11111111111111111111111111111111", own_span, "00"),
        ("00", own_trace, own_span, "01"),
    ]
    [(_, letter, headers)] = result.dead_letters
    assert json.loads(letter)["source"]["offset"] == 3
    assert headers == [("x", b"2"), ("traceparent", stamped[0]), (ERROR_HEADER, b"invalid_json")]
    links = {(f"{link.context.trace_id:032x}", link.context.span_id) for link in span.links}
    assert links == {(TRACE_ID, 0xB7AD6B7169203331), ("1" * 32, 0x2222222222222222)}
    assert "messaging.destination.partition.id" not in (span.attributes or {})


def test_links_are_distinct_and_capped(
    tracer: BatchTracer, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracer, "_max_links", 3)
    records = [
        record(reading(), i, headers=[("traceparent", b"00-%032x-%016x-01" % (i % 5 + 1, 9))])
        for i in range(20)
    ]
    tracer.begin(records, [0]).end(None, None)
    [span] = exporter.get_finished_spans()
    assert [link.context.trace_id for link in span.links] == [1, 2, 3]


def test_failed_batch_span_records_the_error(
    tracer: BatchTracer, exporter: InMemorySpanExporter
) -> None:
    tracer.begin([record(reading())], [0]).end(Framed(), RuntimeError("no ack"))
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_unsampled_batch_still_stamps_outputs_with_flag_00() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    tracer = BatchTracer(provider.get_tracer("test"), "t", "g")
    records = [record(reading()), record(reading(), 1, headers=[("traceparent", UPSTREAM)])]
    stamps = tracer.begin(records, [0]).stamps
    assert stamps is not None
    assert [_parts(s[0][1])[3] for s in stamps] == ["00", "01"]
    assert _parts(stamps[1][0][1])[1] == TRACE_ID


def test_a_noop_tracer_passes_upstream_contexts_on_unchanged() -> None:
    tracer = BatchTracer(NoOpTracer(), "t", "g")
    records = [record(reading(), headers=[("traceparent", UPSTREAM)]), record(reading(), 1)]
    batch = tracer.begin(records, [0])
    assert batch.stamps == [[("traceparent", UPSTREAM)], []]
    batch.end(None, None)
    assert tracer.begin([record(reading())], [0]).stamps is None


def test_records_without_headers_share_one_header_list(tracer: BatchTracer) -> None:
    stamps = tracer.begin([record(reading(), i) for i in range(100)], [0]).stamps
    assert stamps is not None
    assert len({id(stamp) for stamp in stamps}) == 1
