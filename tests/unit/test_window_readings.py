"""The worker side of windows: the points' readings for the window state (Framed.readings)
against a plain per-record oracle (json.loads), and the points read back from the produce
batches for a revision (Framer.points; what sending some to the dead letters does with them
is in test_stage_dead_letters)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.config import Settings
from processor.geo.stage import SpatialStage
from processor.messages.jobs import BatchSpec, Framed, Job
from processor.state.aggregates import sensor_keys
from processor.state.spec import Readings, Verdict, WindowSpec
from processor.state.windows import PartitionWindows
from processor.workers.framing import Framer, StageThenFrame
from processor.workers.runner import ProcessRunner, ThreadRunner

from .records import messages, reading, record

FIELDS = ("pm25", "battery", "absent")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HUGE = int("1" + "0" * 400)


@pytest.fixture(scope="module")
def stage() -> StageThenFrame:
    return StageThenFrame(SpatialStage.from_settings(Settings()))


def job(
    values: Sequence[bytes | None],
    fields: tuple[str, ...] | None = FIELDS,
    *,
    prebuilt: bool = True,
) -> Job:
    """``values`` as one partition's run (offsets from 100), every third row stamped."""
    stamps = [[("traceparent", b"%d" % row)] if row % 3 == 0 else [] for row in range(len(values))]
    work = Job(BatchSpec((0, 1, 2), 1 << 14, prebuilt=prebuilt), BatchSpec((0,), 1 << 14), stamps)
    work.state_fields = fields
    keys = [b"k%d" % row for row in range(len(values))]
    work.extend(
        "in",
        4,
        [record(v, 100 + i, key=k) for i, (v, k) in enumerate(zip(values, keys, strict=True))],
    )
    return work


def number(value: Any) -> float:
    """The rules' value of a field: a finite JSON number, else NaN (counted nowhere)."""
    if type(value) in {int, float}:
        try:
            as_float = float(value)
        except OverflowError:
            return math.nan
        return as_float if math.isfinite(as_float) else math.nan
    return math.nan


def oracle(
    values: Sequence[bytes | None], valid: Sequence[int], fields: tuple[str, ...]
) -> tuple[list[str], list[int], list[list[float]]]:
    """Sensor ids, event µs and field values of rows ``valid``, one record at a time."""
    ids, stamps, numbers = [], [], []
    for row in valid:
        raw = values[row]
        assert raw is not None
        document = json.loads(raw)
        when = datetime.fromisoformat(document["timestamp"].replace("Z", "+00:00"))
        ids.append(document["sensor_id"])
        stamps.append((when - EPOCH) // timedelta(microseconds=1))
        numbers.append([number(document.get(name)) for name in fields])
    return ids, stamps, numbers


def assert_readings(
    framed: Framed, values: Sequence[bytes | None], valid: list[int], fields: tuple[str, ...]
) -> None:
    found = framed.readings
    assert found is not None
    ids, stamps, numbers = oracle(values, valid, fields)
    assert found.rows.tolist() == valid
    assert found.sensors.tolist() == sensor_keys(ids).tolist()
    assert found.event_us.tolist() == stamps
    expected = np.array(numbers, dtype=np.float64).reshape(len(valid), len(fields))
    np.testing.assert_array_equal(found.values, expected)  # NaN where NaN
    assert found.rows.dtype == found.event_us.dtype == np.int64
    assert found.values.dtype == np.float64


def mixed() -> tuple[list[bytes | None], list[int]]:
    """Valid readings of every decoding path between dead letters, and the valid rows."""
    values: list[bytes | None] = [
        reading("a", pm25=12.5, battery=3.9),
        b"not json",
        reading("b\u00e9\x00", timestamp="2026-11-23T11:00:00.5+01:00", pm25=7),  # a dict
        None,
        reading("c", pm25="12", battery=True),  # neither is a number
        reading("d", latitude=95.0, pm25=1.0),  # out of range: a dead letter
        reading("e", pm25=HUGE, battery=-0.0),
        json.dumps(  # a source CRS: decoded to a dict, given latitude/longitude
            {"sensor_id": "f", "timestamp": "2026-11-23T10:00:00Z", "crs": "EPSG:3857"}
            | {"x": 950_000.0, "y": 6_000_000.0, "pm25": 2, "latitude": "n/a"}
        ).encode(),
    ]
    return values, [0, 2, 4, 6, 7]


def test_windows_off_adds_nothing(stage: StageThenFrame) -> None:
    values, _ = mixed()
    framed = stage.run(job(values, None))
    assert framed.readings is None


def test_the_readings_are_the_valid_rows_as_read_one_by_one(stage: StageThenFrame) -> None:
    values, valid = mixed()
    framed = stage.run(job(values))
    assert framed.published == len(valid)
    assert framed.dead_lettered == len(values) - len(valid)
    assert_readings(framed, values, valid, FIELDS)
    assert framed.readings is not None
    assert math.isnan(framed.readings.values[3, 0])  # row 6's huge integer


def test_fields_are_the_readings_own_not_what_the_stage_adds(stage: StageThenFrame) -> None:
    values, valid = mixed()
    fields = ("latitude", "x", "crs")  # the stage sets these on documents it decoded
    framed = stage.run(job(values, fields))
    assert_readings(framed, values, valid, fields)
    assert framed.readings is not None
    assert np.isnan(framed.readings.values[4, [0, 2]]).all()  # "n/a", and a name: no numbers
    assert framed.readings.values[4, 1] == 950_000.0


def test_a_batch_of_dead_letters_only_has_empty_readings(stage: StageThenFrame) -> None:
    framed = stage.run(job([b"x", None]))
    assert_readings(framed, [b"x", None], [], FIELDS)


ZONES = [UTC, timezone(timedelta(hours=1)), timezone(-timedelta(hours=4, minutes=30))]
field_value = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**20), 10**20),
    st.just(HUGE),
    st.booleans(),
    st.text(max_size=3),
)


@st.composite
def batches_of_readings(draw: st.DrawFn) -> tuple[list[bytes | None], list[int]]:
    values: list[bytes | None] = []
    valid: list[int] = []
    for row in range(draw(st.integers(0, 30))):
        if draw(st.booleans()) and row % 4 == 0:
            values.append(draw(st.sampled_from([b"{", b"[]", None])))
            continue
        micros = draw(
            st.integers(-(10**14), 10**14)
            | st.integers(-(10**11), 10**11).map(lambda ms: ms * 1000)
        )
        when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
        fields = {
            name: draw(field_value) for name in FIELDS[:2] if draw(st.booleans())
        }  # some missing
        zone = draw(st.sampled_from(ZONES))  # Z: kept as bytes; an offset: decoded to a dict
        precision = "milliseconds" if micros % 1000 == 0 and draw(st.booleans()) else "auto"
        stamp = when.astimezone(zone).isoformat(timespec=precision).replace("+00:00", "Z")
        values.append(reading(draw(st.text(min_size=1, max_size=4)), timestamp=stamp, **fields))
        valid.append(row)
    return values, valid


@settings(max_examples=60, deadline=None)
@given(batches_of_readings())
def test_readings_match_the_oracle(
    stage: StageThenFrame, batch: tuple[list[bytes | None], list[int]]
) -> None:
    values, valid = batch
    assert_readings(stage.run(job(values)), values, valid, FIELDS)


@settings(max_examples=40, deadline=None)
@given(batches_of_readings())
def test_reading_the_fields_leaves_the_points_as_they_are(
    stage: StageThenFrame, batch: tuple[list[bytes | None], list[int]]
) -> None:
    """The fields are read in the codec's own pass when they are numbers; a reading whose
    fields are not (text, true, a huge integer) is still published from its own bytes."""
    values, _ = batch
    values += mixed()[0]
    plain, measured = stage.run(job(values, None)), stage.run(job(values))
    assert messages(measured.points) == messages(plain.points)
    assert messages(measured.letters) == messages(plain.letters)


def test_the_dedup_key_is_the_instant_to_the_microsecond_not_its_spelling(
    stage: StageThenFrame,
) -> None:
    stamps = [
        "2026-11-23T00:00:00.000100Z",
        "2026-11-23T00:00:00.000200Z",  # 100 µs later: another reading
        "2026-11-23T01:00:00.000100+01:00",  # the first's instant
        "2026-11-23T00:00:00.0001Z",  # the first's instant
        "2026-11-23T00:00:00.000200000Z",  # the second's
        "2026-11-22T19:00:00.0002-05:00",  # the second's
        "2026-11-23T00:00:00.000201Z",
    ]
    values = [reading("s", timestamp=stamp, pm25=1.0) for stamp in stamps]
    framed = stage.run(job([*values, reading("t", timestamp=stamps[0])]))
    found = framed.readings
    assert found is not None
    state = PartitionWindows(WindowSpec(60_000, 0, FIELDS, dedup=True))
    verdicts, _ = state.apply(
        Readings(100 + found.rows, found.sensors, found.event_us, found.values)
    )
    counted, duplicate = Verdict.COUNTED, Verdict.DUPLICATE
    assert verdicts.tolist() == [counted, counted, *[duplicate] * 4, counted, counted]


async def test_readings_cross_the_thread_and_a_worker_process() -> None:
    values, valid = mixed()
    work = job(values)
    for runner in (ThreadRunner(Settings(stage_processes=0)), ProcessRunner(Settings(), 1)):
        await runner.start()
        try:
            framed = await runner.compute(work)
        finally:
            await runner.close()
        assert_readings(framed, values, valid, FIELDS)
        read = Framer().points(work, framed)  # as a revision reads them back
        assert read.rows == valid
        published = [value for _, value, _ in messages(framed.points)]
        assert sorted(published) == sorted(read.values)
