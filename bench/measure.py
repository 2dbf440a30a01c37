"""Rates from the workers' progress samples.

A run's rate is the records done inside a window divided by the window's length. The
window starts at the **first record done** (so interpreter start-up, client start and the
group join are excluded) and ends when **every record is done**. For the raw and naive
loops "done" means committed, so the window is exactly first commit to last commit. The
processor commits at most every ``commit_interval_s`` (0.1 s by default); its "done" is the
moment a record was acknowledged (sampled every 5 ms), which is what a commit at that
instant would certify. Starting at its first *commit* instead would skip its first second,
which at 200,000 records is most of the run, and the part where it still fetches. Samples
of several processes (the scale scenario) are merged on the shared monotonic clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Sample = tuple[float, int, int, float]  # (monotonic time, records done, commits, CPU seconds)


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float
    records: int
    cpu: float  # CPU seconds the worker processes used inside the window
    basis: str  # "first done" | "worker start"

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_us_per_record(self) -> float:
        """Immune to other load on the machine, unlike the rate (but not the broker's CPU)."""
        return self.cpu / self.records * 1e6


def merge(workers: Sequence[Sequence[Sample]]) -> list[Sample]:
    """One timeline of the summed progress of several processes."""
    events = sorted(
        (t, index, done, commits, cpu)
        for index, samples in enumerate(workers)
        for t, done, commits, cpu in samples
    )
    done_by = [0] * len(workers)
    commits_by = [0] * len(workers)
    cpu_by = [0.0] * len(workers)
    merged: list[Sample] = []
    for t, index, done, commits, cpu in events:
        done_by[index] = done
        commits_by[index] = commits
        cpu_by[index] = cpu
        merged.append((t, sum(done_by), sum(commits_by), sum(cpu_by)))
    return merged


def window(workers: Sequence[Sequence[Sample]], total: int) -> Window | None:
    """The measurement window of a run, or None if it never finished ``total`` records."""
    timeline = merge(workers)
    end = next((s for s in timeline if s[1] >= total), None)
    if end is None:
        return None
    starts = [
        ("first done", next((s for s in timeline if s[1] > 0), None)),
        ("worker start", timeline[0]),
    ]
    for basis, start in starts:
        if start is not None and start[0] < end[0] and end[1] > start[1]:
            return Window(start[0], end[0], end[1] - start[1], end[3] - start[3], basis)
    return None
