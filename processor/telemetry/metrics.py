"""The processor's metrics: OpenTelemetry instruments that read ``Stats``.

Observable instruments read the counters and gauges the pipeline keeps anyway, and only when
a reader collects (a Prometheus scrape, an OTLP export), so the hot path pays nothing for
them and the core never imports OpenTelemetry. The batch latency histogram is the one
instrument recorded as things happen, once per batch. Prometheus sees the dotted names with
underscores plus its unit and ``_total`` suffixes; README, "Observability", lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from processor.core.flow import PauseReason
from processor.core.stats import Stats
from processor.messages.codec import DeadLetterCode

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Callback = Callable[[CallbackOptions], Iterable[Observation]]
PartitionValues = Mapping[tuple[str, int], int]


def batch_latency(meter: Meter) -> Histogram:
    return meter.create_histogram(
        "processor.batch.duration",
        unit="s",
        description="Time from taking a batch off the buffer to the broker's acknowledgement",
        explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS),
    )


def _value(read: Callable[[], float]) -> Callback:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(read())]

    return callback


def _labelled(label: str, read: Callable[[], Mapping[str, int]], known: Iterable[str]) -> Callback:
    """One series per known label value (0 until it happens), plus any other that occurred."""
    names = list(known)

    def callback(_: CallbackOptions) -> Iterable[Observation]:
        values = read()
        return [Observation(values.get(n, 0), {label: n}) for n in sorted({*names, *values})]

    return callback


def _flags(read: Callable[[], Mapping[tuple[str, int], int]]) -> Callback:
    """One series per (field, QARTOD flag) that occurred."""

    def callback(_: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"field": name, "flag": str(flag)})
            for (name, flag), count in sorted(read().items())
        ]

    return callback


def _partitioned(read: Callable[[], PartitionValues]) -> Callback:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, {"topic": topic, "partition": partition})
            for (topic, partition), value in sorted(read().items())
        ]

    return callback


def _behind(ahead: PartitionValues, committed: PartitionValues) -> dict[tuple[str, int], int]:
    """Per partition, how far ``ahead`` is past the committed offset (where both are known)."""
    return {tp: max(0, offset - committed[tp]) for tp, offset in ahead.items() if tp in committed}


def observe(
    meter: Meter, stats: Stats, spill_capacity: int, clock: Callable[[], float] = time.monotonic
) -> None:
    """Register every observable instrument of the processor on ``meter``, reading ``stats``.

    ``spill_capacity`` is the configured spill bound, served so that alerts and dashboards
    can judge how full the spill is without knowing the deployment's settings.
    """
    reasons = [reason.value for reason in PauseReason]
    codes = [code.value for code in DeadLetterCode]
    gauges: list[tuple[str, str, str, Callback]] = [
        ("processor.buffer.records", "{record}", "Records in memory: queued or awaiting ack",
         _value(lambda: stats.buffered)),
        ("processor.buffer.capacity", "{record}", "Most records held in memory",
         _value(lambda: stats.buffer_max)),
        ("processor.buffer.utilization", "1", "Buffered records over capacity",
         _value(lambda: stats.buffered / max(1, stats.buffer_max))),
        ("processor.partitions.assigned", "{partition}", "Partitions this member owns",
         _value(lambda: stats.assigned)),
        ("processor.partitions.paused", "{partition}", "Paused partitions, by reason",
         _labelled("reason", lambda: stats.paused_by_reason, reasons)),
        ("processor.spill.records", "{record}", "Records waiting in spill segments",
         _value(lambda: stats.spill_records)),
        ("processor.spill.size", "By", "Bytes of spill segments on disk",
         _value(lambda: stats.spill_bytes)),
        ("processor.spill.capacity", "By", "Spill size bound (0: spilling off)",
         _value(lambda: spill_capacity)),
        ("processor.memory.used", "By", "Memory in use (RSS or cgroup working set)",
         _value(lambda: stats.memory_used)),
        ("processor.memory.budget", "By", "Memory budget",
         _value(lambda: stats.memory_budget)),
        ("processor.memory.utilization", "1", "Memory in use over budget",
         _value(lambda: stats.memory_used / max(1, stats.memory_budget))),
        ("processor.consumer.lag", "{record}", "End offset minus committed offset",
         _partitioned(lambda: _behind(stats.end_offsets, stats.committed_offsets))),
        ("processor.commit.lag", "{record}", "Taken from Kafka but not yet committed",
         _partitioned(lambda: _behind(stats.positions, stats.committed_offsets))),
        ("processor.loop.age", "s", "Seconds since the fetch loop last went round",
         _value(lambda: max(0.0, clock() - stats.last_loop))),
        ("processor.broker.reachable", "1", "1 while the broker answers, 0 during an outage",
         _value(lambda: int(stats.broker_reachable))),
        ("processor.broker.silence", "s", "Seconds since the broker last answered",
         _value(lambda: max(0.0, clock() - stats.broker_answered))),
        ("processor.group.joining", "1", "1 while waiting for a partition assignment",
         _value(lambda: int(stats.joining))),
        ("processor.state.size", "By", "Window state of the owned partitions in memory",
         _value(lambda: stats.state_bytes)),
        ("processor.windows.open", "{window}", "Open per-sensor windows of owned partitions",
         _value(lambda: stats.open_windows)),
    ]  # fmt: skip
    counters: list[tuple[str, str, str, Callback]] = [
        ("processor.records.consumed", "{record}", "Records taken from Kafka",
         _value(lambda: stats.consumed)),
        ("processor.records.published", "{record}", "Points acknowledged by the broker",
         _value(lambda: stats.published)),
        ("processor.records.dead_lettered", "{record}", "Dead letters acknowledged, by code",
         _labelled("code", lambda: stats.dead_lettered, codes)),
        ("processor.records.spilled", "{record}", "Records written to spill segments",
         _value(lambda: stats.spilled)),
        ("processor.records.replayed", "{record}", "Records read back from spill",
         _value(lambda: stats.replayed)),
        ("processor.records.handed_back", "{record}", "Records left to Kafka: no room anywhere",
         _value(lambda: stats.handed_back)),
        ("processor.pauses", "{pause}", "Partition pauses, by reason",
         _labelled("reason", lambda: stats.pauses, reasons)),
        ("processor.resumes", "{resume}", "Partition resumes, by reason",
         _labelled("reason", lambda: stats.resumes, reasons)),
        ("processor.commits", "{commit}", "Offset commits", _value(lambda: stats.commits)),
        ("processor.late_readings", "{reading}", "Readings past their window: published only",
         _value(lambda: stats.late_readings)),
        ("processor.aggregates.published", "{aggregate}", "Closed windows' aggregates saved",
         _value(lambda: stats.aggregates_published)),
        ("processor.qc.flags", "{value}", "Points' QC flags, by field and QARTOD flag",
         _flags(lambda: stats.qc_flags)),
    ]  # fmt: skip
    for name, unit, description, callback in gauges:
        meter.create_observable_gauge(name, [callback], unit=unit, description=description)
    for name, unit, description, callback in counters:
        meter.create_observable_counter(name, [callback], unit=unit, description=description)
