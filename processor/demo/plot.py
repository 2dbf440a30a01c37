"""The demo's picture: rates, buffer, paused partitions and memory over time, as one PNG.

Drawn once the run is over, from the same samples the live view showed, with matplotlib's
object API: a bare ``Figure`` renders PNG through Agg, so no display, no pyplot global state
and no backend switch are involved.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from processor.core.flow import PauseReason
from processor.demo.live import MIB, Sample, rate_series


def plot(
    history: list[Sample],
    path: Path,
    title: str,
    watermarks: tuple[float, float],
    burst: tuple[float, float],
) -> Path:
    """Write the PNG to ``path``: ``watermarks`` are the buffer's (high, low) fractions and
    ``burst`` the seconds between which the burst was at full strength (shaded)."""
    high, low = watermarks
    t = [s.elapsed for s in history]
    per_second = rate_series(history)
    figure = Figure(figsize=(10, 10), layout="constrained")
    flow, buffer, paused, memory = figure.subplots(4, 1, sharex=True)
    figure.suptitle(title)
    flow.plot(t, [r[0] for r in per_second], label="sensors -> kafka")
    flow.plot(t, [r[1] for r in per_second], label="kafka -> processor")
    flow.plot(t, [r[2] for r in per_second], label="published + dead-lettered")
    flow.set_ylabel("records/s")
    flow.legend(loc="upper right")

    buffer.plot(t, [100 * s.buffered / s.buffer_max for s in history], color="tab:purple")
    buffer.axhline(100 * high, linestyle="--", color="tab:red", label="pause (high watermark)")
    buffer.axhline(100 * low, linestyle="--", color="tab:green", label="resume (low watermark)")
    buffer.set_ylabel("buffer %")
    buffer.set_ylim(0, 105)
    buffer.legend(loc="upper right")

    total = [len(s.paused) for s in history]
    paused.fill_between(t, total, step="post", color="lightgray", label="any reason")
    for reason in PauseReason:
        counts = [s.paused_by_reason.get(reason.value, 0) for s in history]
        if any(counts):
            paused.step(t, counts, where="post", label=reason.value)
    paused.set_ylabel("paused partitions")
    paused.legend(loc="upper right")

    used = [s.memory_used / MIB if s.memory_used else float("nan") for s in history]
    memory.plot(t, used, label="used")
    memory.plot(t, [s.memory_budget / MIB for s in history], linestyle="--", label="budget")
    memory.plot(t, [s.spill_bytes / MIB for s in history], label="spill on disk")
    memory.set_ylabel("MiB")
    memory.set_xlabel("seconds")
    memory.legend(loc="center right")

    for axes in (flow, buffer, paused, memory):
        axes.axvspan(*burst, color="tab:orange", alpha=0.12, linewidth=0)
    flow.text(sum(burst) / 2, 0, "smoke burst", ha="center", va="bottom", color="tab:orange")
    figure.savefig(path, dpi=100, format="png")
    return path
