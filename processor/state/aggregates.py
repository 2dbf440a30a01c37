"""Closed windows as columns, and as the aggregates topic's JSON values (issue 17's contract).

Sensor keys are UTF-8 ids with one closing byte (:data:`KEY_END`), in a fixed-width bytes
array: such arrays sort and search in C, and hold a million ids without a million objects.
The closing byte is there because numpy strips trailing NUL bytes from fixed-width strings:
without it an id ending in U+0000 would be the same key as the id without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from processor.state.tables import F64, I64, Keys, OpenWindows

KEY_END = b"\x01"


def sensor_keys(sensor_ids: Sequence[str]) -> Keys:
    """The decoder's sensor ids as the state's keys (1 ms for 5,000 ids)."""
    return np.array([sensor_id.encode() + KEY_END for sensor_id in sensor_ids], dtype=np.bytes_)


def encoded_sensor_keys(encoded_ids: Sequence[bytes]) -> Keys:
    """The same keys from ids already UTF-8 (the points' Kafka keys): no decode, no encode."""
    return np.array([encoded + KEY_END for encoded in encoded_ids], dtype=np.bytes_)


def sensor_ids(keys: Keys) -> list[str]:
    """The ids back from :func:`sensor_keys`."""
    return [key[:-1].decode() for key in keys.tolist()]


@dataclass(slots=True)
class Aggregates:
    """Windows that closed, ordered by start then sensor key (the order they close in, so the
    same readings give the same sequence however they were batched). Per field ``(n, fields)``
    columns; a field with no value counted has count 0 and NaN mean, min and max. Bounds in
    UTC epoch microseconds. ``suspect`` and ``failed``: per field, the values QC left out;
    ``flagged``: the fields QC tests (their counts are reported). ``nowcast``: by aggregate,
    the NowCast of each pollutant that has one (hourly windows of pm25 or pm10, else None)."""

    fields: tuple[str, ...]
    sensors: Keys
    start_us: I64
    end_us: I64
    count: I64
    field_count: I64
    mean: F64
    minimum: F64
    maximum: F64
    suspect: I64
    failed: I64
    flagged: tuple[str, ...] = ()
    nowcast: list[dict[str, Any]] | None = None

    @classmethod
    def closed(
        cls, fields: tuple[str, ...], keys: Keys, windows: OpenWindows, length_us: int
    ) -> Aggregates:
        """The aggregates of ``windows`` (rows of the open table, closing now); ``keys`` are
        their sensors' keys."""
        order = np.lexsort((windows.sensor, windows.start))
        done = windows.rows(order)
        some = done.field_count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = done.total / done.field_count
        return cls(
            fields,
            keys[done.sensor],
            done.start,
            done.start + length_us,
            done.count,
            done.field_count,
            np.where(some, mean, np.nan),
            np.where(some, done.low, np.nan),
            np.where(some, done.high, np.nan),
            done.suspect,
            done.failed,
        )

    @classmethod
    def empty(cls, fields: tuple[str, ...]) -> Aggregates:
        """No window closed (most batches): empty columns, made directly, at a tenth of the
        cost of :meth:`closed` of no windows."""
        nothing = np.empty(0, dtype=np.int64)
        none = np.empty((0, len(fields)), dtype=np.int64)
        absent = np.empty((0, len(fields)))
        return cls(
            fields,
            np.empty(0, "S1"),
            nothing,
            nothing,
            nothing,
            none,
            absent,
            absent,
            absent,
            none,
            none,
        )

    def __len__(self) -> int:
        return self.start_us.size

    def rows(self) -> list[dict[str, Any]]:
        """The aggregates topic's values: ``window_start``/``window_end`` in RFC 3339 UTC with
        ``Z``, in whole seconds when every bound is one, else milliseconds when every bound is
        a whole one, else microseconds; a field with no value counted in the window is left
        out of ``fields``; ``qc`` counts the values of each field QC tests that it flagged
        suspect or failed (and so left out of ``fields``); ``nowcast`` only where a pollutant
        has one."""
        bounds = np.concatenate((self.start_us, self.end_us))
        unit: Literal["s", "ms", "us"] = "s"
        if (bounds % 1000).any():
            unit = "us"
        elif (bounds % 1_000_000).any():
            unit = "ms"
        text = np.datetime_as_string(bounds.astype("datetime64[us]"), unit=unit, timezone="UTC")
        starts, ends = text[: len(self)].tolist(), text[len(self) :].tolist()
        counts, field_counts = self.count.tolist(), self.field_count.tolist()
        means, lows, highs = self.mean.tolist(), self.minimum.tolist(), self.maximum.tolist()
        rows = [
            {
                "sensor_id": sensor,
                "window_start": starts[i],
                "window_end": ends[i],
                "count": counts[i],
                "fields": {
                    name: {
                        "count": field_counts[i][f],
                        "mean": means[i][f],
                        "min": lows[i][f],
                        "max": highs[i][f],
                    }
                    for f, name in enumerate(self.fields)
                    if field_counts[i][f]
                },
            }
            for i, sensor in enumerate(sensor_ids(self.sensors))
        ]
        if self.flagged:
            columns = [self.fields.index(name) for name in self.flagged]
            suspect, failed = self.suspect[:, columns].tolist(), self.failed[:, columns].tolist()
            for i, row in enumerate(rows):
                row["qc"] = {
                    name: {"suspect": suspect[i][f], "failed": failed[i][f]}
                    for f, name in enumerate(self.flagged)
                }
        if self.nowcast is not None:
            for row, nowcast in zip(rows, self.nowcast, strict=True):
                if nowcast:
                    row["nowcast"] = nowcast
        return rows
