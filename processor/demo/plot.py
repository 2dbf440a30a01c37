"""The demo's picture: rates, each region's mean pm25 and NowCast AQI per hourly window, buffer,
paused partitions and memory over time, as one PNG.

Drawn once the run is over, from the same samples the live view showed, with matplotlib's
object API: a bare ``Figure`` renders PNG through Agg, so no display, no pyplot global state
and no backend switch are involved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from processor.core.flow import PauseReason
from processor.demo.live import MIB, Sample, rate_series

#: A window: its start (wall seconds), mean pm25 and NowCast AQI (None: none).
Hour = tuple[float, float | None, int | None]
#: The AQI's categories as bands: Good to Hazardous, in EPA's colours.
_AQI_BANDS = [
    (0, 50, "green"),
    (50, 100, "yellow"),
    (100, 150, "orange"),
    (150, 200, "red"),
    (200, 300, "purple"),
    (300, 500, "maroon"),
]


def plot(
    history: list[Sample],
    path: Path,
    title: str,
    watermarks: tuple[float, float],
    burst: tuple[float, float],
    *,
    pm25: Mapping[str, Sequence[Hour]],
    window_s: float,
    hot: str,
) -> Path:
    """Write the PNG to ``path``: ``watermarks`` are the buffer's (high, low) fractions,
    ``burst`` the seconds between which the burst was at full strength (shaded), ``pm25`` each
    region's windows (start in seconds, mean pm25, NowCast AQI), ``window_s`` long, ``hot``
    the smoke's."""
    high, low = watermarks
    t = [s.elapsed for s in history]
    per_second = rate_series(history)
    figure = Figure(figsize=(10, 14), layout="constrained")
    flow, smoke, air, buffer, paused, memory = figure.subplots(6, 1, sharex=True)
    figure.suptitle(title)
    flow.plot(t, [r[0] for r in per_second], label="sensors -> kafka")
    flow.plot(t, [r[1] for r in per_second], label="kafka -> processor")
    flow.plot(t, [r[2] for r in per_second], label="published + dead-lettered")
    flow.set_ylabel("records/s")
    flow.legend(loc="upper right")
    _steps(smoke, {r: [(t, mean) for t, mean, _ in w] for r, w in pm25.items()}, window_s, hot)
    smoke.set_ylabel("mean pm25 per hourly\nwindow (µg/m³)")
    nowcast = {r: [(t, aqi) for t, _, aqi in w] for r, w in pm25.items()}
    _steps(air, nowcast, window_s, hot)
    for low, high, color in _AQI_BANDS:
        air.axhspan(low, high, color=color, alpha=0.12, linewidth=0)
    air.set_ylabel("NowCast AQI (pm25)")
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

    for axes in (flow, smoke, air, buffer, paused, memory):
        axes.axvspan(*burst, color="tab:orange", alpha=0.12, linewidth=0)
    flow.text(sum(burst) / 2, 0, "smoke burst", ha="center", va="bottom", color="tab:orange")
    figure.savefig(path, dpi=100, format="png")
    return path


def _steps(
    axes: Axes,
    by_region: Mapping[str, Sequence[tuple[float, float | None]]],
    window_s: float,
    hot: str,
) -> None:
    """A step per window and region: the window's value across its span."""
    for region, windows in by_region.items():
        edges = [start for start, _ in windows] + [windows[-1][0] + window_s]
        means = [math.nan if mean is None else mean for _, mean in windows]
        if region == hot:
            axes.stairs(
                means, edges, baseline=None, label=f"{region} (smoke)", color="tab:red", lw=2.5
            )
        else:
            axes.stairs(means, edges, baseline=None, label=region, lw=1.2)
    if by_region:
        axes.legend(loc="upper right")
    else:
        axes.text(0.5, 0.5, "no window closed", ha="center", transform=axes.transAxes)
