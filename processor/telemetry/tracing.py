"""Batch spans and W3C trace context in Kafka headers, at a cost paid per batch, not per record.

One CONSUMER span per processed batch, named and attributed per the messaging semantic
conventions, started as a root and linked to the upstream contexts found in the records'
``traceparent`` headers (distinct ones, up to the SDK's link limit). Every output and dead
letter gets a ``traceparent`` whose parent is the batch span. An output whose input carried
a trace keeps that trace id, so a downstream consumer continues the sensor's own trace, and
the upstream sampling flag, so the trace is sampled consistently end to end. A tracer whose
spans have no valid context (OpenTelemetry's no-op tracer) stamps as
:mod:`processor.propagation` does: the upstream contexts unchanged, nothing on the others.

Why not a child span per upstream trace, the textbook shape: a recorded span costs about
30 us here, and upstream producers usually start a trace per reading, so that is 15 times
the whole per-record budget. Here the per-record work is finding the header in records
that have headers and one shared header list per distinct trace; records without headers
cost a truthiness test and share one header list per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.trace import (
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from processor.messages.codec import Headers, RecordLike
from processor.messages.jobs import Framed
from processor.messages.propagation import TRACEPARENT, Upstream, passed_on, upstreams


@dataclass(slots=True)
class TracedBatch:
    """The span of one batch and the headers its outputs carry."""

    span: Span
    stamps: Sequence[Headers] | None

    def end(self, result: Framed | None, error: Exception | None) -> None:
        if result is not None:
            self.span.set_attribute("processor.batch.published", result.published)
            self.span.set_attribute("processor.batch.dead_lettered", result.dead_lettered)
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self.span.end()


class BatchTracer:
    """Starts the span of a batch read from ``topic`` by consumer group ``group``."""

    def __init__(self, tracer: Tracer, topic: str, group: str) -> None:
        self._tracer = tracer
        self._topic = topic
        self._name = f"process {topic}"
        self._group = group
        self._max_links = SpanLimits().max_links or 0

    def begin(self, records: Sequence[RecordLike], partitions: Sequence[int]) -> TracedBatch:
        found = upstreams(records)
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": self._topic,
            "messaging.consumer.group.name": self._group,
            "messaging.batch.message_count": len(records),
            "processor.partitions": list(partitions),
        }
        if len(partitions) == 1:
            attributes["messaging.destination.partition.id"] = str(partitions[0])
        span = self._tracer.start_span(
            self._name,
            context=Context(),  # a root: a batch has many parents, they become links
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        if span.is_recording():  # an unsampled batch skips building its links
            for context in self._link_contexts(found):
                span.add_link(context)
        own = span.get_span_context()
        if not own.is_valid:  # a no-op tracer: pass the upstream contexts on unchanged
            return TracedBatch(span, passed_on(len(records), found))
        parent = b"-%016x-" % own.span_id
        flags = b"01" if own.trace_flags.sampled else b"00"
        stamps = [[(TRACEPARENT, b"00-%032x%s%s" % (own.trace_id, parent, flags))]] * len(records)
        by_trace: dict[bytes, Headers] = {}
        for i, (trace_id, _, sampled) in found:
            stamp = by_trace.get(trace_id)
            if stamp is None:
                stamp = by_trace[trace_id] = [(TRACEPARENT, b"00-" + trace_id + parent + sampled)]
            stamps[i] = stamp
        return TracedBatch(span, stamps)

    def _link_contexts(self, found: list[tuple[int, Upstream]]) -> list[SpanContext]:
        """The distinct upstream contexts, in order of appearance, up to the link limit."""
        contexts: list[SpanContext] = []
        seen: set[tuple[bytes, bytes]] = set()
        for _, (trace_id, span_id, flags) in found:
            if len(contexts) >= self._max_links:
                break
            if (trace_id, span_id) in seen:
                continue
            seen.add((trace_id, span_id))
            contexts.append(
                SpanContext(
                    int(trace_id, 16),
                    int(span_id, 16),
                    is_remote=True,
                    trace_flags=TraceFlags(int(flags, 16) & TraceFlags.SAMPLED),
                )
            )
        return contexts
