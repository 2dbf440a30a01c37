"""The window settings: durations as operators write them, field lists, and one-line errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.config_sources import load_settings
from processor.durations import format_ms, parse_ms
from processor.errors import ConfigError
from tests.unit.test_config import assert_one_line


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("60s", 60_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        ("250ms", 250),
        ("2d", 172_800_000),
        (" 10M ", 600_000),
        (90_000, 90_000),
    ],
)
def test_durations_read_as_operators_write_them(text: object, ms: int) -> None:
    assert parse_ms(text) == ms


@pytest.mark.parametrize("text", ["5 minutes", "5", "m5", "1.5h", "", "-5m", "5x"])
def test_anything_else_is_refused_naming_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="such as 60s, 5m, 1h"):
        parse_ms(text)


@given(st.integers(min_value=0, max_value=10**12))
def test_a_duration_prints_as_it_reads_back(ms: int) -> None:
    assert parse_ms(format_ms(ms)) == ms


def test_windows_are_off_unless_a_length_is_set() -> None:
    settings = load_settings()
    assert settings.window is None
    assert settings.allowed_lateness == 600_000
    assert settings.aggregates_topic == "sensor.aggregates"
    assert settings.dedup is False
    assert settings.state_cleanup_delay == 600_000  # Kafka Streams' state.cleanup.delay.ms


def test_window_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_WINDOW", "1h")
    monkeypatch.setenv("PROCESSOR_AGGREGATE_FIELDS", "pm25, pm10,")
    monkeypatch.setenv("PROCESSOR_ALLOWED_LATENESS", "15m")
    monkeypatch.setenv("PROCESSOR_DEDUP", "true")
    monkeypatch.setenv("PROCESSOR_STATE_CLEANUP_DELAY", "1h")
    settings = load_settings()
    assert (settings.window, settings.allowed_lateness) == (3_600_000, 900_000)
    assert settings.state_cleanup_delay == 3_600_000
    assert settings.aggregate_fields == ("pm25", "pm10")
    assert settings.dedup is True


def test_a_profile_presets_the_fields_and_a_setting_wins() -> None:
    assert load_settings({"profile": "air_quality"}).aggregate_fields == ("pm25", "pm10")
    chosen = load_settings({"profile": "air_quality", "aggregate_fields": "pm25"})
    assert chosen.aggregate_fields == ("pm25",)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"window": "5 minutes", "aggregate_fields": "pm25"}, "PROCESSOR_WINDOW"),
        ({"window": "0s", "aggregate_fields": "pm25"}, "PROCESSOR_WINDOW"),
        ({"allowed_lateness": "soon"}, "PROCESSOR_ALLOWED_LATENESS"),
        ({"state_cleanup_delay": "-1s"}, "PROCESSOR_STATE_CLEANUP_DELAY"),
        ({"window": "5m"}, "PROCESSOR_AGGREGATE_FIELDS"),
    ],
)
def test_bad_window_settings_are_one_line_naming_the_variable(
    values: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(values)
    assert_one_line(info.value, variable)
