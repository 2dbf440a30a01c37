"""Medians, ratios, the printed table, the JSON result and the PNG chart."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path
from typing import Any

LABELS = {
    "commit_1s": "1 s commits",
    "scale": "scale (2 procs)",
    "budget_256": "256 MiB",
    "budget_512": "512 MiB",
}
RATIOS = (("processor", "raw_batch"), ("processor", "raw"), ("processor", "naive"))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]], scenarios: tuple[str, ...]) -> dict[str, Any]:
    """Per scenario: medians over the successful runs (and their spread)."""
    summary: dict[str, Any] = {}
    for name in scenarios:
        done = [r for r in runs if r["scenario"] == name and "error" not in r]
        rates = [r["rate"] for r in done]
        entry: dict[str, Any] = {
            "runs": len(done),
            "failed": sum(1 for r in runs if r["scenario"] == name and "error" in r),
            "rate": _median(rates),
            "rate_min": min(rates, default=None),
            "rate_max": max(rates, default=None),
            "cpu_us_per_record": _median([r["cpu_us_per_record"] for r in done]),
            "wall_s": _median([r["wall_s"] for r in done]),
            "peak_rss_mb": _median([r["peak_rss_mb"] for r in done]),
            "stage_workers": _stage_workers(done),
        }
        if name == "burst":
            entry.update(_burst(done))
        if name == "scale":
            entry["peak_rss_mb_each"] = [r["peak_rss_mb_each"] for r in done]
        summary[name] = entry
    return summary


def _stage_workers(runs: list[dict[str, Any]]) -> int | None:
    """Stage workers of a processor run (as its runner placed them; None for the others)."""
    counts = [w["stage_workers"] for r in runs for w in r["workers"] if "stage_workers" in w]
    return max(counts, default=None)


def _burst(runs: list[dict[str, Any]]) -> dict[str, Any]:
    workers = [r["workers"][0] for r in runs]
    latencies = [s * 1000 for w in workers for s in w.get("pause_latencies_s", [])]
    return {
        "memory_limit_mb": workers[0]["memory_limit_mb"] if workers else None,
        "buffer_max": workers[0]["summary"]["buffer_max"] if workers else None,
        "peak_buffered": max((w["summary"]["peak_buffered"] for w in workers), default=None),
        "pause_latency_ms_median": _median(latencies),
        "pause_latency_ms_max": max(latencies, default=None),
        "crossings": _median([w.get("crossings", 0) for w in workers]),
        "pauses": _median([sum(w["summary"]["pauses"].values()) for w in workers]),
        "pauses_by_reason": [w["summary"]["pauses"] for w in workers],
        "resumes": _median([sum(w["resumes"].values()) for w in workers]),
        "spilled": _median([w["summary"]["spilled"] for w in workers]),
    }


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    pairs = [
        *RATIOS,
        ("scale", "processor"),
        ("processor", "commit_1s"),
        ("budget_256", "processor"),
        ("budget_512", "processor"),
        ("geofence", "raw"),
        ("geofence", "raw_batch"),
    ]
    for top, bottom in pairs:
        a = summary.get(top, {}).get("rate")
        b = summary.get(bottom, {}).get("rate")
        if a and b:
            found[f"{top}/{bottom}"] = a / b
    return found


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def table(summary: dict[str, Any], found: dict[str, float]) -> str:
    lines = [
        f"{'scenario':<16} {'runs':>4} {'rate rec/s':>11} {'min':>9} {'max':>9} "
        f"{'CPU us/rec':>10} {'wall s':>7} {'peak RSS MiB':>12} {'workers':>7}",
    ]
    for name, s in summary.items():
        runs = f"{s['runs']}" + (f"+{s['failed']}!" if s["failed"] else "")
        lines.append(
            f"{LABELS.get(name, name):<16} {runs:>4} {_fmt(s['rate']):>11} "
            f"{_fmt(s['rate_min']):>9} {_fmt(s['rate_max']):>9} "
            f"{_fmt(s['cpu_us_per_record'], '.1f'):>10} "
            f"{_fmt(s['wall_s'], '.1f'):>7} {_fmt(s['peak_rss_mb'], '.0f'):>12} "
            f"{_fmt(s['stage_workers'], 'd'):>7}"
        )
    if found:
        lines.append("ratios (of medians): " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
    burst = summary.get("burst")
    if burst and burst["runs"]:
        lines.append(
            f"burst: buffer {burst['buffer_max']}, memory limit {burst['memory_limit_mb']} MiB: "
            f"peak RSS {_fmt(burst['peak_rss_mb'], '.0f')} MiB "
            f"({burst['peak_rss_mb'] / burst['memory_limit_mb']:.0%} of the limit), "
            f"peak buffered {burst['peak_buffered']}, throughput {_fmt(burst['rate'])}/s; "
            "high-watermark crossing -> pause "
            f"{_fmt(burst['pause_latency_ms_median'], '.3f')} ms median, "
            f"{_fmt(burst['pause_latency_ms_max'], '.3f')} ms max "
            f"({_fmt(burst['crossings'], '.0f')} crossings = buffer pause cycles); pause events "
            f"{_fmt(burst['pauses'], '.0f')}, resume events {_fmt(burst['resumes'], '.0f')}, "
            f"spilled {_fmt(burst['spilled'], '.0f')}"
        )
    return "\n".join(lines)


def chart(summary: dict[str, Any], found: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, s in summary.items() if s["rate"] is not None]
    labels = [LABELS.get(n, n) for n in names]
    rates = [summary[n]["rate"] for n in names]
    low = [summary[n]["rate"] - summary[n]["rate_min"] for n in names]
    high = [summary[n]["rate_max"] - summary[n]["rate"] for n in names]
    rss = [summary[n]["peak_rss_mb"] for n in names]
    ours = ("processor", "commit_1s", "budget_256", "budget_512", "scale", "burst")
    colors = ["tab:orange" if n in ours else "tab:gray" for n in names]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), width_ratios=(3, 2))
    left.bar(labels, rates, yerr=[low, high], capsize=4, color=colors)
    left.set_ylabel("records/s (median; bars: min-max)")
    left.set_title("throughput, first record done to last")
    for i, (rate, top) in enumerate(zip(rates, high, strict=True)):
        left.annotate(f"{rate:,.0f}", (i, rate + top), ha="center", va="bottom", fontsize=8)
    right.bar(labels, rss, color=colors)
    right.set_ylabel("peak RSS MiB (median)")
    right.set_title("peak RSS per process")
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=30)
    note = "   ".join(f"{k} = {v:.2f}" for k, v in found.items())
    figure.suptitle(f"{title}\n{note}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(
    out: Path,
    meta: dict[str, Any],
    runs: list[dict[str, Any]],
    scenarios: tuple[str, ...],
    profile: str | None = None,
) -> dict[str, Any]:
    summary = summarize(runs, scenarios)
    found = ratios(summary)
    result = {
        "meta": {**meta, "python": platform.python_version(), "machine": platform.machine()},
        "summary": summary,
        "ratios": found,
        "runs": runs,
        "profile": profile,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    title = f"{meta['records']:,} readings, {meta['partitions']} partitions, embedded broker"
    chart(summary, found, out / "results.png", title)
    print(table(summary, found))
    return result
