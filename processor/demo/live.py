"""What the demo shows while it runs: samples of the processor over time, as a live terminal
view (rich) or as plain periodic lines (CI, logs, no terminal).

A sample is taken from ``Stats``, the demo's own producer counts and the aggregates read
back from their topic, never from the processor's internals beyond its public accessors, so
the view shows what an operator's dashboards would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from processor.core.pipeline import Processor
    from processor.demo.aggregates import RegionAggregates
    from processor.demo.scenario import SensorNetwork

MIB = 1024 * 1024
_RATE_WINDOW_S = 2.0
_UNHEALTHY_PM25 = 55.5  # µg/m³: "unhealthy" from here on (EPA's 2024 PM2.5 breakpoints)


@dataclass(frozen=True, slots=True)
class Sample:
    elapsed: float
    phase: str
    produced: int
    consumed: int
    finished: int
    dead_lettered: dict[str, int]
    buffered: int
    buffer_max: int
    paused: dict[int, tuple[str, ...]]  # partition: reasons
    pauses: dict[str, int]  # pause events by reason
    spill_records: int
    spill_bytes: int
    memory_used: int
    memory_budget: int
    lag: dict[int, int]  # partition: produced but not committed
    #: region: (start of its latest closed window, s since the sensors started; mean pm25;
    #: its NowCast AQI)
    pm25: dict[str, tuple[float, float, int | None]]

    @property
    def paused_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reasons in self.paused.values():
            for reason in reasons:
                counts[reason] = counts.get(reason, 0) + 1
        return counts


def take_sample(
    processor: Processor,
    network: SensorNetwork,
    regions: RegionAggregates,
    elapsed: float,
    phase: str,
) -> Sample:
    stats = processor.stats
    committed = {p: o for (_, p), o in stats.committed_offsets.items()}
    return Sample(
        elapsed=elapsed,
        phase=phase,
        produced=network.produced,
        consumed=stats.consumed,
        finished=stats.finished,
        dead_lettered=dict(stats.dead_lettered),
        buffered=stats.buffered,
        buffer_max=stats.buffer_max,
        paused={tp.partition: tuple(sorted(r)) for tp, r in processor.paused().items()},
        pauses=dict(stats.pauses),
        spill_records=stats.spill_records,
        spill_bytes=stats.spill_bytes,
        memory_used=stats.memory_used,
        memory_budget=stats.memory_budget,
        lag={p: max(0, end - committed.get(p, 0)) for p, end in sorted(network.acked.items())},
        pm25=dict(sorted(regions.latest(network.started_ms).items())),
    )


def _rate(first: Sample, last: Sample) -> tuple[float, float, float]:
    span = max(1e-6, last.elapsed - first.elapsed)
    return (
        (last.produced - first.produced) / span,
        (last.consumed - first.consumed) / span,
        (last.finished - first.finished) / span,
    )


def rate_series(history: list[Sample]) -> list[tuple[float, float, float]]:
    """Readings/s (produced, consumed, finished) at each sample, over a sliding window."""
    series: list[tuple[float, float, float]] = []
    start = 0
    for i, last in enumerate(history):
        while history[start].elapsed < last.elapsed - _RATE_WINDOW_S:
            start += 1
        first = history[min(start, max(0, i - 1))]
        series.append(_rate(first, last) if i else (0.0, 0.0, 0.0))
    return series


def rates(history: list[Sample]) -> tuple[float, float, float]:
    """Readings/s (produced, consumed, finished) over the last couple of seconds."""
    if len(history) < 2:
        return 0.0, 0.0, 0.0
    last = first = history[-1]
    for sample in reversed(history):
        if sample.elapsed < last.elapsed - _RATE_WINDOW_S:
            break
        first = sample
    return _rate(history[-2] if first is last else first, last)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none"


def plain_line(history: list[Sample]) -> str:
    """One line per sample for ``--no-live``."""
    s = history[-1]
    produced, consumed, out = rates(history)
    line = (
        f"[{s.elapsed:5.1f}s] {s.phase:<26} in {produced:6,.0f}/s  consumed {consumed:6,.0f}/s  "
        f"out {out:6,.0f}/s | buffer {s.buffered / s.buffer_max:4.0%} | "
        f"paused {len(s.paused)} ({_counts(s.paused_by_reason)}) | "
        f"spill {s.spill_records:,} | mem {s.memory_used / MIB:.0f}/"
        f"{s.memory_budget / MIB:.0f} MB | dead letters {sum(s.dead_lettered.values()):,}"
    )
    means = " ".join(f"{region} {mean:.0f}" for region, (_, mean, _) in s.pm25.items())
    return f"{line} | pm25 {means}" if means else line


def _pm25_line(sample: Sample) -> Text:
    """Each region's latest closed window: the smoke's region in red once it is unhealthy."""
    line = Text("pm25 µg/m³, latest closed window:  ")
    if not sample.pm25:
        line.append("no window closed yet", style="dim")
    for i, (region, (start, mean, aqi)) in enumerate(sample.pm25.items()):
        line.append(f"{'   ' if i else ''}{region} ")
        line.append(f"{mean:.0f}", style="bold red" if mean >= _UNHEALTHY_PM25 else "green")
        line.append(f" (t={start:.0f} s{'' if aqi is None else f', AQI {aqi}'})")
    return line


def _bar(value: float, total: float, label: str) -> Table:
    row = Table.grid(padding=(0, 1))
    row.add_row(ProgressBar(total=max(total, 1), completed=min(value, total), width=28), label)
    return row


def render(history: list[Sample], header: str) -> Group:
    """The live view of the latest sample."""
    s = history[-1]
    produced, consumed, out = rates(history)
    flow = Table(box=None, padding=(0, 1))
    flow.add_column("records")
    flow.add_column("per s", justify="right")
    flow.add_column("total", justify="right")
    flow.add_row("sensors -> kafka", f"{produced:,.0f}", f"{s.produced:,}")
    flow.add_row("kafka -> processor", f"{consumed:,.0f}", f"{s.consumed:,}")
    flow.add_row("points + dead letters", f"{out:,.0f}", f"{s.finished:,}")
    pressure = Table.grid(padding=(0, 1))
    pressure.add_row(
        "buffer", _bar(s.buffered, s.buffer_max, f"{s.buffered:,}/{s.buffer_max:,} records")
    )
    pressure.add_row(
        "memory",
        _bar(
            s.memory_used,
            s.memory_budget,
            f"{s.memory_used / MIB:,.0f}/{s.memory_budget / MIB:,.0f} MB",
        ),
    )
    pressure.add_row("spill", f"{s.spill_records:,} records, {s.spill_bytes / 1024:,.0f} KiB")
    pressure.add_row("pauses", _counts(s.pauses))
    partitions = Table(box=None, padding=(0, 2))
    partitions.add_column("partition", justify="right")
    partitions.add_column("lag", justify="right")
    partitions.add_column("state")
    for partition, lag in s.lag.items():
        reasons = s.paused.get(partition)
        state = Text("paused: " + ", ".join(reasons), style="yellow") if reasons else "fetching"
        partitions.add_row(str(partition), f"{lag:,}", state)
    letters = Table.grid(padding=(0, 2))
    for code, count in sorted(s.dead_lettered.items()):
        letters.add_row(code, f"{count:,}")
    top = Table.grid(padding=(0, 1), expand=True)
    top.add_row(Panel(flow, title="throughput"), Panel(pressure, title="backpressure"))
    bottom = Table.grid(padding=(0, 1), expand=True)
    bottom.add_row(Panel(partitions, title="partitions"), Panel(letters, title="dead letters"))
    title = Text(f"{header}   t={s.elapsed:.0f}s   {s.phase}", style="bold")
    return Group(title, top, _pm25_line(s), bottom)
