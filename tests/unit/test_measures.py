"""processor.messages.measures: event times and fields of validated readings, as windows need."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.messages.codec import decode_batch
from processor.messages.measures import Measures, fields_of, measures

FIELDS = ("pm2.5", "class")  # neither is a Python name: the view must not need one


def _reading(timestamp: str, **fields: object) -> bytes:
    extra = "".join(f',"{k.replace("_", ".")}":{v}' for k, v in fields.items())
    return (
        f'{{"sensor_id":"s","timestamp":"{timestamp}","latitude":1,"longitude":2{extra}}}'
    ).encode()


def _measured(values: list[bytes]) -> Measures:
    """The measures of every row ``values`` decode to (the codec reads them as it decodes)."""
    columns, _ = decode_batch(values, 1 << 20, FIELDS)
    return measures(columns, list(range(len(columns.index))), len(FIELDS))


MIDNIGHT_US = 1_796_256_000_000_000  # 2026-12-03T00:00:00Z


def _event_us(*timestamps: str) -> list[int]:
    return _measured([_reading(stamp) for stamp in timestamps]).event_us.tolist()


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
    found = _measured(values).values
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
    found = _measured([(raw + f'"pm2.5":{huge},"class":-{huge}}}').encode()]).values
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
    columns, rejected = decode_batch(values, 1 << 20, FIELDS)
    assert rejected == []
    found = measures(columns, list(range(len(values))), len(FIELDS))
    assert found.values.shape == (len(numbers), 2)
    assert found.values[:, 0].tolist() == [float(n) for n in numbers]


def test_an_empty_batch_has_empty_columns() -> None:
    found = _measured([])
    assert found.event_us.shape == (0,)
    assert found.values.shape == (0, 2)


def test_a_reading_whose_field_is_no_number_still_passes_through_as_bytes() -> None:
    # The decode that reads the fields refuses "12": the reading must still be a plain one,
    # published by appending to its bytes, with the field read apart (as NaN).
    raw = _reading("2026-12-03T00:00:00Z", pm2_5='"12"', **{"class": 4})
    columns, rejected = decode_batch([raw], 1 << 20, FIELDS)
    assert rejected == []
    assert columns.documents == [raw]
    assert np.isnan(measures(columns, [0], 2).values[0][0])
    assert measures(columns, [0], 2).values[0][1] == 4.0


@pytest.mark.parametrize("fields", [("latitude", "pm2.5"), ("class",), ()])
def test_fields_are_the_same_read_in_the_decode_or_apart(fields: tuple[str, ...]) -> None:
    # A field named as a reading's own (latitude) is read apart; one field, or none, in the
    # decode's shape: every way gives the values of fields_of.
    values = [
        _reading("2026-12-03T00:00:00Z", pm2_5=1.5, **{"class": 2}),
        _reading("2026-12-03T00:00:00+00:00", pm2_5=3),  # decoded into a dict
        _reading("2026-12-03T00:00:00Z", pm2_5="null", **{"class": '"x"'}),
    ]
    columns, rejected = decode_batch(values, 1 << 20, fields)
    assert rejected == []
    found = measures(columns, [0, 1, 2], len(fields)).values
    assert found.shape == (3, len(fields))
    expected = np.array([fields_of(document, fields) for document in columns.documents])
    assert np.array_equal(
        found, expected.astype(np.float64).reshape(3, len(fields)), equal_nan=True
    )
    if fields == ("latitude", "pm2.5"):
        assert found[:, 0].tolist() == [1.0, 1.0, 1.0]


def test_some_rows_only() -> None:
    values = [_reading(f"2026-12-03T00:00:0{second}Z", pm2_5=second) for second in range(4)]
    columns, _ = decode_batch(values, 1 << 20, FIELDS)
    found = measures(columns, [1, 3], len(FIELDS))
    assert found.event_us.tolist() == [MIDNIGHT_US + 1_000_000, MIDNIGHT_US + 3_000_000]
    assert found.values[:, 0].tolist() == [1.0, 3.0]


def test_a_batch_decoded_without_fields_has_no_measures() -> None:
    columns, _ = decode_batch([_reading("2026-12-03T00:00:00Z")], 1 << 20)
    with pytest.raises(ValueError, match="without the fields"):
        measures(columns, [0], 2)
