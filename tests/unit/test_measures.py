"""processor.messages.measures: event times and fields of validated readings, as windows need."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from processor.messages.codec import decode_batch
from processor.messages.measures import measures

FIELDS = ("pm2.5", "class")  # neither is a Python name: the view must not need one


def _reading(timestamp: str, **fields: object) -> bytes:
    extra = "".join(f',"{k.replace("_", ".")}":{v}' for k, v in fields.items())
    return (
        f'{{"sensor_id":"s","timestamp":"{timestamp}","latitude":1,"longitude":2{extra}}}'
    ).encode()


MIDNIGHT_US = 1_796_256_000_000_000  # 2026-12-03T00:00:00Z


def _event_us(*timestamps: str) -> list[int]:
    columns, rejected = decode_batch([_reading(stamp) for stamp in timestamps], 1 << 20)
    assert rejected == []
    return measures(columns.documents, FIELDS).event_us.tolist()


def test_event_times_are_utc_microseconds_whatever_the_offset() -> None:
    assert _event_us(
        "2026-12-03T00:00:01.250Z",
        "2026-12-03T01:00:00+01:00",  # decoded into a dict by the codec
        "2026-12-02T23:59:59.999999Z",
        "2026-12-03T00:00:00.000100Z",
        "2026-12-03T00:00:00.000200Z",
    ) == [
        MIDNIGHT_US + 1_250_000,
        MIDNIGHT_US,
        MIDNIGHT_US - 1,
        MIDNIGHT_US + 100,
        MIDNIGHT_US + 200,
    ]


def test_one_instant_is_one_event_time_however_it_is_spelled() -> None:
    spellings = (
        "2026-12-03T00:00:00.0001Z",
        "2026-12-03T00:00:00.000100Z",
        "2026-12-03T01:00:00.000100+01:00",
        "2026-12-02T19:30:00.0001-04:30",
        "2026-12-03T00:00:00.000100000Z",  # past the microsecond: read by msgspec
        "2026-12-03t00:00:00.0001Z",  # a lowercase t: numpy cannot read it (it failed the batch)
        "2026-12-03 00:00:00.0001Z",
    )
    assert _event_us(*spellings) == [MIDNIGHT_US + 100] * len(spellings)


def test_digits_past_the_microsecond_round_as_the_codec_rounds_an_offset_spelling() -> None:
    # msgspec rounds half up where numpy would truncate: the instant must not depend on the
    # path a record takes (a Z timestamp kept as bytes, an offset decoded into a dict).
    assert _event_us(
        "2026-12-03T00:00:00.0000015Z",
        "2026-12-03T01:00:00.0000015+01:00",
        "2026-12-03T00:00:00.0000014999Z",
        "2026-12-02T23:59:59.9999995Z",
    ) == [MIDNIGHT_US + 2, MIDNIGHT_US + 2, MIDNIGHT_US + 1, MIDNIGHT_US]


def test_a_field_that_is_not_a_finite_number_is_nan() -> None:
    raw = '{"sensor_id":"s","timestamp":"2026-12-03T00:00:00Z","latitude":1,"longitude":2,'
    values = [
        (raw + '"pm2.5":12.5,"class":3}').encode(),
        (raw + '"pm2.5":"12","class":true}').encode(),
        (raw + '"pm2.5":null}').encode(),
        (raw + '"pm2.5":1e400,"class":-0.0}').encode(),  # 1e400: msgspec reads inf
    ]
    columns, _ = decode_batch(values, 1 << 20)
    found = measures(columns.documents, FIELDS).values
    assert found.shape == (4, 2)
    assert found[0].tolist() == [12.5, 3.0]
    assert np.isnan(found[1]).all()
    assert np.isnan(found[2]).all()
    assert math.isnan(found[3][0])
    assert found[3][1] == 0.0


def test_an_integer_past_the_float_range_is_nan_not_a_crash() -> None:
    # A valid reading: one such field used to raise OverflowError and fail its whole batch.
    raw = '{"sensor_id":"s","timestamp":"2026-12-03T00:00:00Z","latitude":1,"longitude":2,'
    huge = "1" + "0" * 400
    columns, _ = decode_batch([(raw + f'"pm2.5":{huge},"class":-{huge}}}').encode()], 1 << 20)
    found = measures(columns.documents, FIELDS).values
    assert np.isnan(found).all()


@given(
    st.lists(
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**9), 10**9)),
        max_size=50,
    )
)
def test_numbers_come_through_as_floats(numbers: list[float]) -> None:
    values = [
        _reading("2026-12-03T00:00:00Z", pm2_5=repr(float(n)) if isinstance(n, float) else n)
        for n in numbers
    ]
    columns, rejected = decode_batch(values, 1 << 20)
    assert rejected == []
    found = measures(columns.documents, FIELDS)
    assert found.values.shape == (len(numbers), 2)
    assert found.values[:, 0].tolist() == [float(n) for n in numbers]


def test_an_empty_batch_has_empty_columns() -> None:
    found = measures([], FIELDS)
    assert found.event_us.shape == (0,)
    assert found.values.shape == (0, 2)
