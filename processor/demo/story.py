"""The demo's run in words: which partitions were held back and for how long, what Kafka held,
when everything paused, and how long the backlog took to drain.

Pure: told from the live view's samples, so it says what was measured, not what was planned.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from processor.demo.live import Sample


def paused_seconds(history: Sequence[Sample], reason: str) -> dict[int, float]:
    """Seconds each partition spent paused for ``reason`` (between consecutive samples)."""
    seconds: dict[int, float] = {}
    for before, after in itertools.pairwise(history):
        for partition, reasons in before.paused.items():
            if reason in reasons:
                seconds[partition] = seconds.get(partition, 0.0) + after.elapsed - before.elapsed
    return seconds


def story(history: Sequence[Sample], hot: Sequence[int]) -> list[str]:
    """A few sentences on the run; ``hot`` are the partitions the burst landed on."""
    if len(history) < 2:
        return ["the run was too short to tell"]
    lines: list[str] = []
    share = paused_seconds(history, "partition_share")
    if share:
        held = ", ".join(f"{p} for {s:.1f} s" for p, s in sorted(share.items()))
        lines.append(f"held back on their own (partition_share): partition {held}")
    others = sorted({p for s in history for p in s.lag} - set(hot))
    flowing = [p for p in others if share.get(p, 0.0) == 0.0]
    if flowing:
        lines.append(
            f"partitions {_listed(flowing)} were never held back for their share: "
            "the burst did not hold them up"
            if len(flowing) > 1
            else f"partition {flowing[0]} was never held back for its share: "
            "the burst did not hold it up"
        )
    peak = max(history, key=lambda s: sum(s.lag.values()))
    held_by_kafka = sum(peak.lag.values())
    lines.append(
        f"Kafka held up to {held_by_kafka:,} readings at once (t={peak.elapsed:.0f} s), "
        f"{_share(peak, hot):.0%} of them on the burst's partitions {_listed(hot)}"
    )
    together = paused_seconds(history, "buffer")
    if together:
        lines.append(
            f"every partition paused together (buffer full) for {max(together.values()):.1f} s "
            "in all, when the burst outran the stage"
        )
    lines.append(_drain(history, peak))
    return lines


def _drain(history: Sequence[Sample], peak: Sample) -> str:
    """When the backlog was gone: after the peak, nothing paused and no more lag than the
    buffer holds (what remains is in flight)."""
    after = [s for s in history if s.elapsed >= peak.elapsed]
    for sample in after:
        if not sample.paused and sum(sample.lag.values()) <= sample.buffer_max:
            waited = sample.elapsed - peak.elapsed
            return (
                f"the backlog was drained at t={sample.elapsed:.0f} s, "
                f"{waited:.0f} s after its peak"
            )
    return "the backlog was not drained when the run ended"


def _share(sample: Sample, partitions: Sequence[int]) -> float:
    total = sum(sample.lag.values())
    return sum(sample.lag.get(p, 0) for p in partitions) / total if total else 0.0


def _listed(partitions: Sequence[int]) -> str:
    return ", ".join(str(p) for p in partitions)
