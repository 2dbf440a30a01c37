"""The CLI explains itself: every option of every command has a description, its default
(or what unset means) and its choices, read from the settings model; each command shows only
the settings it uses."""

from __future__ import annotations

import argparse

import pytest

from processor.cli import _parser
from processor.config import UNSET, Settings, flag_name
from processor.flags import COMMAND_SETTINGS, choices_of, describe


def _commands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("command", ["run", "sample", "broker", "config", "demo"])
def test_every_option_has_a_description_and_a_default_or_unset(command: str) -> None:
    parser = _commands()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = action.help or ""
        assert text.strip(), action.option_strings
        assert "default" in text or "unset: " in text, (action.option_strings, text)
        assert "None" not in parser.format_help(), command


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_a_setting_help_names_its_choices_default_and_variable(name: str) -> None:
    field = Settings.model_fields[name]
    text = describe(name)
    assert text.startswith(str(field.description))
    assert f"env PROCESSOR_{name.upper()}" in text
    for choice in choices_of(field):
        assert choice in text
    if field.default is None or field.default_factory is not None:
        assert f"unset: {UNSET[name]}" in text
    else:
        assert "default " in text


def test_literal_and_bool_settings_list_their_choices() -> None:
    fields = Settings.model_fields
    assert choices_of(fields["log_format"]) == ["json", "text"]
    assert choices_of(fields["outside_policy"]) == ["dead_letter", "pass"]
    assert choices_of(fields["sasl_mechanism"]) == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    assert choices_of(fields["enable_idempotence"]) == ["true", "false"]
    assert "wildfire" in choices_of(fields["profile"])
    assert choices_of(fields["bootstrap_servers"]) == []


def test_every_setting_without_a_default_says_what_unset_means() -> None:
    without = {
        name
        for name, field in Settings.model_fields.items()
        if field.default is None or field.default_factory is not None
    }
    assert without == set(UNSET)


def test_the_command_subsets_are_settings_and_run_has_them_all() -> None:
    for names in COMMAND_SETTINGS.values():
        assert set(names) <= set(Settings.model_fields)
        assert len(names) == len(set(names))
    assert COMMAND_SETTINGS["run"] == tuple(Settings.model_fields)
    assert COMMAND_SETTINGS["config"] == tuple(Settings.model_fields)


def test_sample_shows_the_connection_and_the_input_topic_not_the_processor_settings() -> None:
    text = _commands()["sample"].format_help()
    for name in ("bootstrap_servers", "security_protocol", "sasl_password", "input_topic"):
        assert flag_name(name) in text
    for name in ("buffer_max_records", "spill_dir", "geofences", "output_topic", "group_id"):
        assert flag_name(name) not in text
    for option in ("--rate", "--sensors", "--count", "--invalid-ratio"):
        assert option in text


def test_broker_shows_only_the_topics() -> None:
    text = _commands()["broker"].format_help()
    assert "--input-topic" in text
    assert "--dlq-topic" in text
    assert "--bootstrap-servers" not in text


def test_the_top_level_help_is_for_users() -> None:
    text = _parser().format_help()
    assert "``" not in text
    assert "this module" not in text
    for command in ("run", "sample", "broker", "config", "demo"):
        assert command in text
