"""OpenTelemetry for the processor, configured the standard way and optional for the core.

Traces go where ``OTEL_TRACES_EXPORTER`` says (``otlp``, ``console`` or ``none``; a comma
separated list). Unset, it means ``otlp`` when an OTLP endpoint is configured and ``none``
otherwise, so with nothing configured no span is started; the upstream trace context is
still passed on to outputs (:mod:`processor.propagation`), as a no-op tracer would. The SDK
reads everything else itself: the sampler (``OTEL_TRACES_SAMPLER``/``_ARG``), the resource
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), endpoints, headers, batch sizes and
export intervals.

Metrics are always readable as Prometheus text (``/metrics``), from a registry of our own so
two processors in one process never mix; they are also exported where
``OTEL_METRICS_EXPORTER`` says, by the same rule. ``otlp`` follows
``OTEL_EXPORTER_OTLP_PROTOCOL`` but defaults to ``http/protobuf`` (what the ``otlp`` extra
installs and what the OTLP specification names as default), not the Python SDK's grpc.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, generate_latest

from processor.config import Settings
from processor.core.observer import BatchTrace
from processor.core.stats import Stats
from processor.errors import ConfigError
from processor.messages.codec import Headers, RecordLike
from processor.messages.jobs import Framed
from processor.messages.propagation import propagate
from processor.telemetry.metrics import batch_latency, observe
from processor.telemetry.tracing import BatchTracer, TracedBatch

DEFAULT_SERVICE_NAME = "geo-stream-processor"
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


def exporter_names(signal: str) -> list[str]:
    """Exporters chosen for ``signal`` (``traces`` or ``metrics``) by the environment."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip()
    if not raw:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        return ["otlp"] if any(os.environ.get(name) for name in endpoints) else []
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if "none" in names:
        return []
    return [name for name in names if name != "prometheus"]  # /metrics is always served


def _load_exporter(name: str, signal: str) -> Any:
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    entry = name
    if name == "otlp":
        protocol = (
            os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol not in _OTLP_BY_PROTOCOL:
            raise ConfigError(
                f"invalid setting OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} "
                "is neither 'grpc' nor 'http/protobuf'"
            )
        entry = _OTLP_BY_PROTOCOL[protocol]
    found = entry_points(group=f"opentelemetry_{signal}_exporter", name=entry)
    if not found:
        hint = " (pip install 'geo-stream-processor[otlp]')" if name == "otlp" else ""
        raise ConfigError(f"invalid setting {variable}: no {entry!r} exporter installed{hint}")
    return next(iter(found)).load()()


def service_resource() -> Resource:
    """The SDK's resource from the environment, named for this service unless named there."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


@dataclass(slots=True)
class _Batch:
    latency: Histogram
    stamps: Sequence[Headers] | None
    traced: TracedBatch | None = None

    def end(self, result: Framed | None, seconds: float, error: Exception | None) -> None:
        self.latency.record(seconds)
        if self.traced is not None:
            self.traced.end(result, error)


class Telemetry:
    """Tracer and meter providers of one processor; a ``BatchObserver`` for its pipeline."""

    def __init__(
        self,
        settings: Settings,
        *,
        span_processors: Sequence[SpanProcessor] = (),
        metric_readers: Sequence[MetricReader] = (),
    ) -> None:
        resource = service_resource()
        self._registry = CollectorRegistry()
        prometheus = PrometheusMetricReader(scope_info_enabled=False, registry=self._registry)
        self._meters = MeterProvider(
            metric_readers=[prometheus, *metric_readers],
            resource=resource,
            shutdown_on_exit=False,
        )
        self._meter = self._meters.get_meter("processor")
        self._spill_capacity = settings.spill_max_bytes
        self._latency = batch_latency(self._meter)
        self._traces: TracerProvider | None = None
        self._tracer: BatchTracer | None = None
        if span_processors:
            self._traces = TracerProvider(resource=resource, shutdown_on_exit=False)
            for processor in span_processors:
                self._traces.add_span_processor(processor)
            tracer = self._traces.get_tracer("processor")
            self._tracer = BatchTracer(tracer, settings.input_topic, settings.group_id)

    @classmethod
    def from_env(cls, settings: Settings) -> Telemetry:
        """Exporters as the ``OTEL_*`` environment configures them (see the module doc)."""
        processors = [
            BatchSpanProcessor(_load_exporter(n, "traces")) for n in exporter_names("traces")
        ]
        readers: list[MetricReader] = []
        for name in exporter_names("metrics"):
            exporter = _load_exporter(name, "metrics")
            readers.append(
                exporter
                if isinstance(exporter, MetricReader)
                else PeriodicExportingMetricReader(exporter)
            )
        return cls(settings, span_processors=processors, metric_readers=readers)

    @property
    def tracing(self) -> bool:
        return self._tracer is not None

    def watch(self, stats: Stats) -> None:
        """Expose ``stats`` through the observable instruments (call once per processor)."""
        observe(self._meter, stats, self._spill_capacity)

    def begin(self, records: Sequence[RecordLike], partitions: Sequence[int]) -> BatchTrace:
        if self._tracer is None:
            return _Batch(self._latency, propagate(records))
        traced = self._tracer.begin(records, partitions)
        return _Batch(self._latency, traced.stamps, traced)

    def prometheus_text(self) -> bytes:
        """The current metrics in the Prometheus text format (collects on each call)."""
        return generate_latest(self._registry)

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        if self._traces is not None:
            self._traces.shutdown()
        self._meters.shutdown()
