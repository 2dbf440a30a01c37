"""What windows aggregate, read from readings that passed validation: each reading's event
time in epoch milliseconds and the configured fields as numbers (NaN where a field is
missing or is not a finite number: the rules count such a value nowhere).

Only runs with windows on. A record published by appending to its bytes is decoded once more,
into a view of just the timestamp and the fields as numbers (msgspec, at C speed); one whose
fields are not all numbers (text, ``true``, ``1e400``) takes a slower view of any JSON value.
A record the codec decoded into a dict already has them. Timestamps become milliseconds in
one numpy call per batch.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Measures:
    """By row of the documents given: event time, and one column per field."""

    event_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]  # shape (rows, fields)


@dataclass(frozen=True, slots=True)
class _Views:
    numbers: msgspec.json.Decoder[Any]  # fields as float | None: the common case
    anything: msgspec.json.Decoder[Any]  # fields as any JSON value, huge numbers as float
    row: Callable[[Any], tuple[Any, ...]]  # (timestamp, field values...) of a view


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
    stamps = [
        stamp[:-1] if isinstance(stamp, str) else stamp.replace(tzinfo=None).isoformat()
        for stamp in columns[0]
    ]
    for i in odd:
        rows[i] = (None, *(_number(value) for value in rows[i][1:]))
    if odd:
        columns = list(zip(*rows, strict=True))
    values = np.array(columns[1:], dtype=np.float64).T  # None: NaN
    event_ms = np.array(stamps, dtype="datetime64[ms]").astype(np.int64)
    return Measures(event_ms, values.reshape(len(rows), len(fields)))


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
