"""A batch's readings beside their sensors' kept values: each sensor's sequence is its
``depth`` latest values, oldest first, then its new ones, and any reading's earlier values
are read from it, however many came in this batch.

The two parts stay apart (the kept values of the batch's sensors, then the new values, in
one array): laying each sensor's new values right after its kept ones would scatter every
value of the batch, and the tests read few earlier values (the previous one; the flat
line's window only where a reading is close to the one before it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Series:
    """The sequences of a batch's sensors: ``kept`` ``(sensors, depth, fields)``, and
    ``new`` ``(readings, fields)`` grouped by sensor, ``counts`` readings each."""

    def __init__(self, kept: F64, new: F64, counts: I64) -> None:
        self._depth = kept.shape[1]
        self._kept_rows = kept.shape[0] * kept.shape[1]
        self._values = np.concatenate((kept.reshape(-1, new.shape[1]), new))
        self._counts = counts
        self._first = np.cumsum(counts) - counts  # each sensor's first reading
        self._group = np.repeat(np.arange(counts.size), counts)  # each reading's sensor
        self.rank = np.arange(new.shape[0]) - self._first[self._group]  # its index there

    def earlier(self, readings: I64, lags: I64, fields: I64 | slice = slice(None)) -> F64:
        """The values ``lags`` ``(k, 1)`` readings before each of ``readings``: ``(k,
        readings, fields)`` (NaN before the sensor's first reading)."""
        group = self._group[readings]
        return self._at(group, self._depth + self.rank[readings] - lags)[..., fields]

    def previous(self) -> F64:
        """The value before each reading: ``(readings, fields)``."""
        return self._at(self._group, self._depth - 1 + self.rank)

    def latest(self) -> F64:
        """Each sensor's ``depth`` latest values after the batch: ``(sensors, depth,
        fields)``, oldest first."""
        group = np.arange(self._counts.size)[:, None]
        return self._at(group, self._counts[:, None] + np.arange(self._depth))

    def _at(self, group: I64, position: I64) -> F64:
        """The values at ``position`` in their sensor's sequence (kept values first)."""
        depth = self._depth
        row = np.where(
            position < depth,
            group * depth + position,
            self._kept_rows + self._first[group] + position - depth,
        )
        out: F64 = self._values[row]
        return out
