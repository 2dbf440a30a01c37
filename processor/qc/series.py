"""A batch's readings beside their sensors' kept values: each sensor's sequence is its
``depth`` latest values, oldest first, then its new ones, and any reading's earlier values
are read from it, however many came in this batch.

The kept values are a ring per sensor, in place in the state: ``history[s, (head[s] + p) %
depth]`` is sensor ``s``'s value ``p`` (oldest first) and ``head[s]`` the slot the next one
goes to. A batch reads its earlier values through the ring and writes only its new values
(each sensor's last ``depth``) back, instead of copying out and shifting every kept value
of its sensors. The new values stay apart (grouped by sensor, in one array): laying each
sensor's new values right after its kept ones would scatter every value of the batch, and
the tests read few earlier values (the previous one; the flat line's window only where a
reading is close to the one before it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Series:
    """The sequences of a batch's sensors ``who``: their rings in ``history`` ``(sensors,
    depth, fields)`` and ``head`` ``(sensors,)``, then ``new`` ``(readings, fields)`` grouped
    by sensor in the order of ``who``, ``counts`` readings each. :meth:`store` writes into
    ``history`` (C-contiguous) and ``head`` in place."""

    def __init__(self, history: F64, head: I64, who: I64, new: F64, counts: I64) -> None:
        n_fields, depth = new.shape[1], history.shape[1]
        self._depth = depth
        self._kept_rows = who.size * depth
        self._history = history
        self._head = head
        self._who = who
        # The batch's rings as they lie (whole rows: a copy, not a gather) and its new values.
        self._values = np.empty((self._kept_rows + new.shape[0], n_fields))
        np.take(
            history, who, axis=0, out=self._values[: self._kept_rows].reshape(-1, depth, n_fields)
        )
        self._values[self._kept_rows :] = new
        self._start = head[who]  # each ring's oldest slot
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

    def store(self) -> None:
        """Move each sensor's ring past its new values: write its last ``depth`` of them
        (the earlier ones would be overwritten) and advance its head."""
        depth, group = self._depth, self._group
        last = np.flatnonzero(self.rank >= self._counts[group] - depth)
        slot = (self._start[group[last]] + self.rank[last]) % depth
        new = np.take(self._values, self._kept_rows + last, axis=0)
        _as_rows(self._history)[self._who[group[last]] * depth + slot] = _as_rows(new)
        self._head[self._who] = (self._start + self._counts) % depth

    def _at(self, group: I64, position: I64) -> F64:
        """The values at ``position`` (``0 <= position``) in their sensor's sequence (kept
        values first)."""
        depth = self._depth
        slot = self._start[group] + position  # below ``2 * depth`` where kept
        row = np.where(
            position < depth,
            group * depth + np.where(slot >= depth, slot - depth, slot),
            self._kept_rows + self._first[group] + position - depth,
        )
        out: F64 = np.take(self._values, row, axis=0)  # 10 times ``values[row]``'s speed
        return out


def _as_rows(values: F64) -> npt.NDArray[np.void]:
    """Each ``fields`` row of ``values`` (C-contiguous) as one item of a 1-d view: numpy
    assigns rows by fancy index 3 times faster as single items."""
    row = np.dtype((np.void, values.itemsize * values.shape[-1]))
    rows: npt.NDArray[np.void] = values.reshape(-1, values.shape[-1], copy=False).view(row)
    return rows.reshape(-1)


def unrolled(history: F64, head: I64) -> F64:
    """The rings ``history`` ``(sensors, depth, fields)`` with heads ``head``, oldest value
    first."""
    depth = history.shape[1]
    slots = (head[:, None] + np.arange(depth)) % depth
    out: F64 = np.take_along_axis(history, slots[:, :, None], axis=1)
    return out
