"""The demo's aggregates by region (pure): sensors' windows added up per region and window."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from processor.demo.aggregates import RegionAggregates

T0 = 1_764_000_000_000  # ms since the epoch, a whole 10 s


def _value(
    sensor: str, start_ms: int, count: int, pm25: dict[str, object] | None, **extra: object
) -> bytes:
    """An aggregates topic value, as the contract spells it (``extra``: qc, nowcast)."""
    seconds = start_ms // 1000
    fields = {} if pm25 is None else {"pm25": pm25}
    return json.dumps({
        "sensor_id": sensor,
        "window_start": _rfc3339(seconds),
        "window_end": _rfc3339(seconds + 10),
        "count": count,
        "fields": {**fields, "pm10": {"count": count, "mean": 1.0, "min": 1.0, "max": 1.0}},
        **extra,
    }).encode()  # fmt: skip


def _rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _pm25(count: int, mean: float | None) -> dict[str, object]:
    return {"count": count, "mean": mean, "min": mean, "max": mean}


def test_a_regions_mean_weighs_each_sensor_by_its_pm25_count() -> None:
    regions = RegionAggregates(length_ms=10_000)
    regions.add([
        _value("alps-00001", T0, 12, _pm25(10, 10.0)),
        _value("alps-00002", T0, 30, _pm25(30, 30.0)),
        _value("sierra-00003", T0, 400, _pm25(400, 300.0)),
    ])  # fmt: skip
    assert regions.read == 3
    none = {"nowcast": None, "aqi": None}
    assert regions.summary(T0) == {
        "alps": [{"t": 0.0, "sensors": 2, "readings": 42, "pm25_mean": 25.0, **none}],
        "sierra": [{"t": 0.0, "sensors": 1, "readings": 400, "pm25_mean": 300.0, **none}],
    }


def test_readings_without_pm25_count_but_do_not_move_the_mean() -> None:
    regions = RegionAggregates(length_ms=10_000)
    regions.add([
        _value("fiji-00001", T0, 5, _pm25(0, None)),  # the processor's spelling: count 0, null
        _value("fiji-00002", T0, 7, None),  # the field left out altogether
        _value("fiji-00003", T0, 4, _pm25(4, 12.0)),
    ])  # fmt: skip
    (window,) = regions.summary(T0)["fiji"]
    assert window == {
        "t": 0.0, "sensors": 3, "readings": 16, "pm25_mean": 12.0, "nowcast": None, "aqi": None
    }  # fmt: skip


def test_series_fill_the_windows_a_region_had_none_in() -> None:
    regions = RegionAggregates(length_ms=10_000)
    regions.add([
        _value("alps-00001", T0, 20, _pm25(20, 14.0)),
        _value("sierra-00002", T0 + 20_000, 20, _pm25(20, 200.0)),
        _value("alps-00001", T0 + 20_000, 20, _pm25(20, 16.0)),
    ])  # fmt: skip
    origin = T0 + 2_500  # the sensors started 2.5 s into the first window
    assert regions.means(origin) == {
        "alps": [(-2.5, 14.0, None), (7.5, None, None), (17.5, 16.0, None)],
        "sierra": [(-2.5, None, None), (7.5, None, None), (17.5, 200.0, None)],
    }
    assert [w["readings"] for w in regions.summary(origin)["sierra"]] == [0, 0, 20]


def test_latest_is_each_regions_last_window_with_a_mean() -> None:
    regions = RegionAggregates(length_ms=10_000)
    assert regions.latest(T0) == {}
    regions.add([
        _value("alps-00001", T0, 20, _pm25(20, 14.0)),
        _value("sierra-00002", T0, 20, _pm25(20, 18.0)),
        _value("sierra-00002", T0 + 10_000, 20, _pm25(20, 250.0)),
        _value("alps-00001", T0 + 10_000, 20, _pm25(0, None)),
    ])  # fmt: skip
    assert regions.latest(T0) == {"alps": (0.0, 14.0, None), "sierra": (10.0, 250.0, None)}


def test_a_regions_nowcast_is_its_sensors_mean_and_its_aqi_that_means() -> None:
    # Hourly windows in a clock running 360 times the wall clock: an hour is 10 s shown.
    regions = RegionAggregates(length_ms=3_600_000, time_scale=360.0)
    hour = 3_600_000
    regions.add([
        _value("sierra-00001", T0, 60, _pm25(60, 50.0), nowcast={"pm25": {"value": 40.0}}),
        _value("sierra-00002", T0, 60, _pm25(60, 30.0), nowcast={"pm25": {"value": 20.0}}),
        _value("sierra-00003", T0, 60, _pm25(60, 30.0)),  # no NowCast yet: left out
        _value("alps-00004", T0 + hour, 60, _pm25(60, 5.0), nowcast={"pm25": {"value": 5.0}}),
    ])  # fmt: skip
    sierra, alps = regions.summary(T0)["sierra"], regions.summary(T0)["alps"]
    # Moderate (9.1-35.4 -> 51-100): 51 + 49 / 26.3 * (30.0 - 9.1) = 89.9
    assert (sierra[0]["nowcast"], sierra[0]["aqi"]) == (30.0, 90)
    assert (alps[1]["t"], alps[1]["nowcast"], alps[1]["aqi"]) == (10.0, 5.0, 28)


def test_the_values_qc_left_out_are_counted_by_sensor() -> None:
    regions = RegionAggregates(length_ms=10_000)

    def qc(suspect: int, failed: int) -> dict[str, object]:
        return {"pm25": {"suspect": suspect, "failed": failed}}

    regions.add([
        _value("alps-00001", T0, 20, _pm25(15, 12.0), qc=qc(3, 2)),
        _value("alps-00001", T0 + 10_000, 20, _pm25(19, 12.0), qc=qc(1, 0)),
        _value("alps-00002", T0, 20, _pm25(20, 12.0), qc=qc(0, 0)),
    ])  # fmt: skip
    assert dict(regions.flagged) == {"alps-00001": 6}


def test_an_aggregate_that_is_not_the_contracts_is_an_error() -> None:
    regions = RegionAggregates(length_ms=10_000)
    with pytest.raises(ValueError, match="sensor_id"):
        regions.add([b'{"window_start": "2026-01-01T00:00:00Z", "count": 1, "fields": {}}'])
