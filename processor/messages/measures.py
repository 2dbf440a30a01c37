"""What windows aggregate, read from readings that passed validation: each reading's event
time in epoch microseconds and the configured fields as numbers (NaN where a field is
missing or is not a finite number: the rules count such a value nowhere).

Only runs with windows on. A record published by appending to its bytes is decoded once more,
into a view of just the timestamp and the fields as numbers (msgspec, at C speed); one whose
fields are not all numbers (text, ``true``, ``1e400``) takes a slower view of any JSON value.
A record the codec decoded into a dict already has them. Timestamps become microseconds in
one numpy call per batch.

The event time is the timestamp's instant to the microsecond, whatever its spelling (the
dedup key's contract): a record kept as bytes has a ``Z`` timestamp, which numpy reads as it
is; one with digits past the microsecond, or that numpy does not read (a lowercase ``t``),
is read by msgspec as the codec read the others, rounded to the microsecond as msgspec
rounds (numpy would truncate: the same instant spelled with an offset would differ by one).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Measures:
    """By row of the documents given: event time, and one column per field."""

    event_us: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]  # shape (rows, fields)


@dataclass(frozen=True, slots=True)
class _Views:
    numbers: msgspec.json.Decoder[Any]  # fields as float | None: the common case
    anything: msgspec.json.Decoder[Any]  # fields as any JSON value, huge numbers as float
    row: Callable[[Any], tuple[Any, ...]]  # (timestamp, field values...) of a view


#: ``len("2026-12-03T00:00:00.000000Z")``: a longer ``Z`` timestamp has digits past the µs.
_MICROSECONDS_Z = 27
_timestamp = msgspec.json.Decoder(Annotated[datetime, msgspec.Meta(tz=True)]).decode


@functools.cache
def _views(fields: tuple[str, ...]) -> _Views:
    """Views of the timestamp and ``fields`` alone; a missing field is None. Attributes are
    f0, f1...: a field's name (``pm2.5``) need not be a Python name."""
    names = [f"f{i}" for i in range(len(fields))]
    rename = dict(zip(names, fields, strict=True))

    def view(kind: Any) -> type:
        spec: list[tuple[str, Any, Any]] = [("timestamp", str, msgspec.NODEFAULT)]
        spec += [(name, kind, None) for name in names]
        return msgspec.defstruct("_Measured", spec, rename=rename)

    return _Views(
        msgspec.json.Decoder(view(float | None)),
        msgspec.json.Decoder(view(Any), float_hook=float),
        operator.attrgetter("timestamp", *names),
    )


def measures(documents: Sequence[dict[str, Any] | bytes], fields: tuple[str, ...]) -> Measures:
    """The event times and ``fields`` of validated readings (their documents as the codec
    left them: original bytes with a UTC ``Z`` timestamp, or a dict with a UTC datetime)."""
    views = _views(fields)
    numbers, row = views.numbers.decode, views.row
    rows: list[tuple[Any, ...]] = []
    odd: list[int] = []  # rows whose fields need a look one by one
    for i, document in enumerate(documents):
        if isinstance(document, bytes):
            try:
                rows.append(row(numbers(document)))
                continue
            except msgspec.ValidationError:  # validated already: a field is not a number
                found = row(views.anything.decode(document))
        else:
            stamp: datetime = document["timestamp"]
            found = (stamp, *(document.get(name) for name in fields))
        rows.append(found)
        odd.append(i)
    if not rows:
        return Measures(np.empty(0, np.int64), np.empty((0, len(fields))))
    columns = list(zip(*rows, strict=True))
    event_us = _microseconds(columns[0])
    for i in odd:
        rows[i] = (None, *(_number(value) for value in rows[i][1:]))
    if odd:
        columns = list(zip(*rows, strict=True))
    values = np.array(columns[1:], dtype=np.float64).T  # None: NaN
    return Measures(event_us, values.reshape(len(rows), len(fields)))


def _microseconds(stamps: Sequence[str | datetime]) -> npt.NDArray[np.int64]:
    """UTC ``Z`` texts and UTC datetimes as epoch microseconds, in one numpy call."""
    limit = _MICROSECONDS_Z
    naive = [
        stamp[:-1] if type(stamp) is str and len(stamp) <= limit else _naive(stamp)
        for stamp in stamps
    ]
    try:
        return np.array(naive, dtype="datetime64[us]").astype(np.int64)
    except ValueError:  # a spelling msgspec reads and numpy does not: all through msgspec
        return np.array([_naive(stamp) for stamp in stamps], "datetime64[us]").astype(np.int64)


def _naive(stamp: str | datetime) -> str:
    """A UTC timestamp as the naive ISO text numpy reads, to the microsecond."""
    if isinstance(stamp, str):
        stamp = _timestamp(b'"%s"' % stamp.encode())
    return stamp.replace(tzinfo=None).isoformat()


def _number(value: Any) -> float | None:
    """A JSON number as a float; anything else (text, true, null, missing) is None."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        try:
            return float(value)
        except OverflowError:  # an integer past float's range is not a finite number
            return None
    return None
