"""The demo's aggregates by region (pure): sensors' windows added up per region and window."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from processor.demo.aggregates import RegionAggregates

T0 = 1_764_000_000_000  # ms since the epoch, a whole 10 s


def _value(sensor: str, start_ms: int, count: int, pm25: dict[str, object] | None) -> bytes:
    """An aggregates topic value, as issue 17's contract spells it."""
    seconds = start_ms // 1000
    fields = {} if pm25 is None else {"pm25": pm25}
    return json.dumps({
        "sensor_id": sensor,
        "window_start": _rfc3339(seconds),
        "window_end": _rfc3339(seconds + 10),
        "count": count,
        "fields": {**fields, "pm10": {"count": count, "mean": 1.0, "min": 1.0, "max": 1.0}},
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
    assert regions.summary(T0) == {
        "alps": [{"t": 0.0, "sensors": 2, "readings": 42, "pm25_mean": 25.0}],
        "sierra": [{"t": 0.0, "sensors": 1, "readings": 400, "pm25_mean": 300.0}],
    }


def test_readings_without_pm25_count_but_do_not_move_the_mean() -> None:
    regions = RegionAggregates(length_ms=10_000)
    regions.add([
        _value("fiji-00001", T0, 5, _pm25(0, None)),  # the processor's spelling: count 0, null
        _value("fiji-00002", T0, 7, None),  # the field left out altogether
        _value("fiji-00003", T0, 4, _pm25(4, 12.0)),
    ])  # fmt: skip
    (window,) = regions.summary(T0)["fiji"]
    assert window == {"t": 0.0, "sensors": 3, "readings": 16, "pm25_mean": 12.0}


def test_series_fill_the_windows_a_region_had_none_in() -> None:
    regions = RegionAggregates(length_ms=10_000)
    regions.add([
        _value("alps-00001", T0, 20, _pm25(20, 14.0)),
        _value("sierra-00002", T0 + 20_000, 20, _pm25(20, 200.0)),
        _value("alps-00001", T0 + 20_000, 20, _pm25(20, 16.0)),
    ])  # fmt: skip
    origin = T0 + 2_500  # the sensors started 2.5 s into the first window
    assert regions.means(origin) == {
        "alps": [(-2.5, 14.0), (7.5, None), (17.5, 16.0)],
        "sierra": [(-2.5, None), (7.5, None), (17.5, 200.0)],
    }
    assert [w["readings"] for w in regions.summary(origin)["sierra"]] == [0, 0, 20]


def test_latest_is_each_regions_last_window_with_a_mean() -> None:
    regions = RegionAggregates(length_ms=10_000)
    assert regions.latest() == {}
    regions.add([
        _value("alps-00001", T0, 20, _pm25(20, 14.0)),
        _value("sierra-00002", T0, 20, _pm25(20, 18.0)),
        _value("sierra-00002", T0 + 10_000, 20, _pm25(20, 250.0)),
        _value("alps-00001", T0 + 10_000, 20, _pm25(0, None)),
    ])  # fmt: skip
    assert regions.latest() == {"alps": (T0, 14.0), "sierra": (T0 + 10_000, 250.0)}


def test_an_aggregate_that_is_not_the_contracts_is_an_error() -> None:
    regions = RegionAggregates(length_ms=10_000)
    with pytest.raises(ValueError, match="sensor_id"):
        regions.add([b'{"window_start": "2026-01-01T00:00:00Z", "count": 1, "fields": {}}'])
