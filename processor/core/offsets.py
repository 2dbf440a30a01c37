"""Which offsets of a partition are finished, and so how far it may be committed.

The commit point is the lowest unfinished offset. Work is tracked as half-open offset ranges
(one per fetched run of records, which may contain gaps left by compaction or transaction
markers), so the bookkeeping costs O(ranges), not O(records). A range may be finished in
pieces and in any order; nothing is finished that was not tracked.
"""

from __future__ import annotations

import bisect


class OffsetTracker:
    """Unfinished offset ranges of one partition, for one assignment generation."""

    def __init__(self, start: int) -> None:
        # Sorted, disjoint, non-adjacent half-open ranges [first, end) not yet finished.
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._high = start  # one past the last tracked offset

    @property
    def high_water(self) -> int:
        return self._high

    @property
    def unfinished(self) -> int:
        """How many offsets (gaps included) are still unfinished."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def track(self, first: int, end: int) -> None:
        """Start tracking ``[first, end)``; ranges arrive in offset order."""
        if end <= first:
            raise ValueError(f"empty range [{first}, {end})")
        if first < self._high:
            raise ValueError(f"range [{first}, {end}) overlaps tracked offsets below {self._high}")
        if self._ends and self._ends[-1] == first:
            self._ends[-1] = end
        else:
            self._starts.append(first)
            self._ends.append(end)
        self._high = end

    def finish(self, first: int, end: int) -> None:
        """Mark ``[first, end)`` finished; offsets outside tracked ranges are ignored."""
        i = bisect.bisect_right(self._ends, first)
        while i < len(self._starts) and self._starts[i] < end:
            start, stop = self._starts[i], self._ends[i]
            keep_left = start < first
            keep_right = stop > end
            if keep_left and keep_right:
                self._ends[i] = first
                self._starts.insert(i + 1, end)
                self._ends.insert(i + 1, stop)
                return
            if keep_left:
                self._ends[i] = first
                i += 1
            elif keep_right:
                self._starts[i] = end
                return
            else:
                del self._starts[i]
                del self._ends[i]

    def commit_point(self) -> int:
        """The offset to commit: nothing below it is unfinished."""
        return self._starts[0] if self._starts else self._high
