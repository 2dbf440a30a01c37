"""Sensor profiles: PROCESSOR_PROFILE presets buffer, memory and batch settings; explicit
settings (flags, env, file) override it; an unknown profile is a one-line error."""

from __future__ import annotations

import argparse
import os
import typing
from pathlib import Path

import pytest

import processor.config
from processor.config import PROFILES, Settings
from processor.config_sources import load_settings
from processor.errors import ConfigError
from processor.flags import add_setting_flags, flag_overrides

PRESET_FIELDS = ("buffer_max_records", "memory_high", "batch_max_records")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PROCESSOR_"):
            monkeypatch.delenv(name)


def preset(settings: Settings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in PRESET_FIELDS}


def test_the_profile_type_lists_exactly_the_presets() -> None:
    assert set(typing.get_args(processor.config.Profile)) == set(PROFILES)
    assert len(typing.get_args(processor.config.Profile)) == len(PROFILES)


def test_the_reference_sensor_types_are_all_there() -> None:
    assert set(PROFILES) == {
        "air_quality",
        "hydrology",
        "temperature_array",
        "wildfire",
        "dissolved_oxygen",
    }
    for values in PROFILES.values():
        assert set(values) >= set(PRESET_FIELDS)
        Settings(**values)  # every preset is itself a valid setting


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_profile_sets_its_presets(profile: str) -> None:
    settings = load_settings({"profile": profile})
    assert settings.profile == profile
    for name, value in PROFILES[profile].items():
        assert getattr(settings, name) == value
    assert settings.memory_resume == pytest.approx(
        PROFILES[profile]["memory_high"] - settings.memory_hysteresis
    )


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    monkeypatch.setenv("PROCESSOR_PROFILE", profile)
    settings = load_settings()
    assert settings.profile == profile
    assert preset(settings) == {name: PROFILES[profile][name] for name in PRESET_FIELDS}


def test_without_a_profile_the_defaults_hold() -> None:
    settings = load_settings()
    assert settings.profile is None
    defaults = {name: Settings.model_fields[name].default for name in PRESET_FIELDS}
    assert preset(settings) == defaults


def test_profiles_differ_from_each_other() -> None:
    chosen = {
        profile: tuple(preset(load_settings({"profile": profile})).values()) for profile in PROFILES
    }
    assert len(set(chosen.values())) == len(PROFILES)
    assert chosen["wildfire"][0] > chosen["dissolved_oxygen"][0]  # a burst needs a bigger buffer


def test_explicit_flags_override_the_profile() -> None:
    settings = load_settings({"profile": "wildfire", "buffer_max_records": "1234"})
    assert settings.buffer_max_records == 1234
    assert settings.memory_high == PROFILES["wildfire"]["memory_high"]
    assert settings.batch_max_records == PROFILES["wildfire"]["batch_max_records"]


def test_env_vars_override_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_BUFFER_MAX_RECORDS", "777")
    monkeypatch.setenv("PROCESSOR_MEMORY_HIGH", "0.6")
    settings = load_settings({"profile": "wildfire"})
    assert settings.buffer_max_records == 777
    assert settings.memory_high == 0.6
    assert settings.batch_max_records == PROFILES["wildfire"]["batch_max_records"]


def test_env_vars_override_a_profile_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCESSOR_PROFILE", "hydrology")
    monkeypatch.setenv("PROCESSOR_BATCH_MAX_RECORDS", "42")
    settings = load_settings()
    assert settings.batch_max_records == 42
    assert settings.buffer_max_records == PROFILES["hydrology"]["buffer_max_records"]


def test_a_flag_overrides_an_env_profile_and_the_flag_profile_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCESSOR_PROFILE", "hydrology")
    settings = load_settings({"profile": "wildfire"})
    assert settings.profile == "wildfire"
    assert preset(settings) == {name: PROFILES["wildfire"][name] for name in PRESET_FIELDS}


def test_command_line_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, "run")
    args = parser.parse_args(["--profile", "temperature_array", "--memory-high", "0.7"])
    settings = load_settings(flag_overrides(args))
    assert settings.profile == "temperature_array"
    assert settings.memory_high == 0.7
    assert settings.buffer_max_records == PROFILES["temperature_array"]["buffer_max_records"]


def test_a_profile_in_the_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "processor.toml"
    path.write_text('profile = "dissolved_oxygen"\nbatch_max_records = 99\n')
    settings = load_settings(config_file=path)
    assert settings.batch_max_records == 99
    assert settings.buffer_max_records == PROFILES["dissolved_oxygen"]["buffer_max_records"]
    monkeypatch.setenv("PROCESSOR_BUFFER_MAX_RECORDS", "5000")
    assert load_settings(config_file=path).buffer_max_records == 5000


@pytest.mark.parametrize("value", ["volcano", "Wildfire", "wild fire", "air-quality"])
def test_unknown_profile_names_the_setting(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"profile": value})
    message = str(error.value)
    assert message.startswith("invalid setting PROCESSOR_PROFILE (--profile)")
    assert "\n" not in message


def test_unknown_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_PROFILE", "volcano")
    with pytest.raises(ConfigError, match="PROCESSOR_PROFILE"):
        load_settings()


def test_an_override_is_still_checked_against_the_profile() -> None:
    """Profile memory_high 0.75 with an explicit hysteresis above it is refused as usual."""
    with pytest.raises(ConfigError, match="PROCESSOR_MEMORY_HYSTERESIS"):
        load_settings({"profile": "wildfire", "memory_hysteresis": "0.8"})
