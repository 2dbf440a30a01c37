"""What windows aggregate, read from readings that passed validation: each reading's event
time in epoch microseconds and the configured fields as numbers (NaN where a field is
missing or is not a finite number: the rules count such a value nowhere).

Only runs with windows on. The codec reads them in the decode that validates each record
(:func:`processor.messages.codec.decode_batch` given the fields): a plain reading's
timestamp text and its fields as numbers, at C speed, in the same pass. What that decode
cannot read comes here one record at a time (:func:`fields_of`): a record decoded into a
dict, one whose fields are not all numbers (text, ``true``, ``1e400``), fields named as a
reading's own. Timestamps become microseconds in one numpy call per batch.

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
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # the codec calls fields_of
    from processor.messages.codec import Columns


@dataclass(frozen=True, slots=True)
class Measures:
    """By row of the documents given: event time, and one column per field."""

    event_us: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]  # shape (rows, fields)


#: ``len("2026-12-03T00:00:00.000000Z")``: a longer ``Z`` timestamp has digits past the µs.
_MICROSECONDS_Z = 27
_timestamp = msgspec.json.Decoder(Annotated[datetime, msgspec.Meta(tz=True)]).decode


@functools.cache
def _any_values(fields: tuple[str, ...]) -> tuple[msgspec.json.Decoder[Any], Callable[[Any], Any]]:
    """A view of ``fields`` alone as any JSON value (huge numbers as float; a missing field
    is None), and the getter of their values. Attributes are f0, f1...: a field's name
    (``pm2.5``) need not be a Python name."""
    names = [f"f{i}" for i in range(len(fields))]
    view = msgspec.defstruct(
        "_Fields",
        [(name, Any, None) for name in names],
        rename=dict(zip(names, fields, strict=True)),
    )
    return msgspec.json.Decoder(view, float_hook=float), operator.attrgetter(*names)


def fields_of(document: dict[str, Any] | bytes, fields: tuple[str, ...]) -> tuple[Any, ...]:
    """A validated reading's ``fields`` (its document as decoded, or its bytes) as numbers,
    None where missing or not a finite number."""
    if not fields:
        return ()
    if isinstance(document, bytes):
        decoder, getter = _any_values(fields)
        found = getter(decoder.decode(document))
        found = found if len(fields) > 1 else (found,)
    else:
        found = tuple(document.get(name) for name in fields)
    return tuple(_number(value) for value in found)


def measures(columns: Columns, rows: list[int], width: int) -> Measures:
    """The event times and ``width`` field values of ``rows`` of a batch decoded with fields,
    from each row's timestamp (a UTC ``Z`` text or a UTC datetime) and values (as the codec
    read them: floats, None for NaN)."""
    stamps: Sequence[str | datetime] | None = columns.stamps
    numbers: Sequence[tuple[Any, ...]] | None = columns.numbers
    if stamps is None or numbers is None:
        raise ValueError("the batch was decoded without the fields to measure")
    if not rows:
        return Measures(np.empty(0, np.int64), np.empty((0, width)))
    if len(rows) < len(stamps):  # else every row (the common case): no lists to pick
        stamps, numbers = [stamps[row] for row in rows], [numbers[row] for row in rows]
    event_us = _microseconds(stamps)
    values = np.array(numbers, dtype=np.float64)  # None: NaN
    return Measures(event_us, values.reshape(len(rows), width))


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
