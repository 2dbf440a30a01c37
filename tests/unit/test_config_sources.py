"""Where each setting came from (`processor config`), errors that name the TOML file and key,
and a warning for a `PROCESSOR_*` variable that is no setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from processor.cli import main
from processor.config_sources import resolve_settings, unknown_variables
from processor.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PROCESSOR_"):
            monkeypatch.delenv(name)


def test_each_value_has_its_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "processor.toml"
    config.write_text('input_topic = "from-file"\nlinger_ms = 9\n')
    monkeypatch.setenv("PROCESSOR_LINGER_MS", "7")
    monkeypatch.setenv("PROCESSOR_PROFILE", "wildfire")
    settings, sources = resolve_settings({"acks": "1"}, config)
    assert sources["acks"] == "flag --acks"
    assert sources["linger_ms"] == "env PROCESSOR_LINGER_MS"
    assert sources["input_topic"] == f"file {config}"
    assert sources["buffer_max_records"] == "profile wildfire"
    assert sources["output_topic"] == "default"
    assert (settings.acks, settings.linger_ms, settings.input_topic) == ("1", 7, "from-file")


def test_a_bad_value_in_the_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "processor.toml"
    config.write_text('acks = "2"\n')
    with pytest.raises(ConfigError) as info:
        resolve_settings(config_file=config)
    assert str(info.value).startswith(
        f"invalid setting acks in {config} (PROCESSOR_ACKS, --acks): "
    )


def test_a_bad_value_from_the_env_still_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "processor.toml"
    config.write_text('acks = "all"\n')
    monkeypatch.setenv("PROCESSOR_ACKS", "2")
    with pytest.raises(ConfigError) as info:
        resolve_settings(config_file=config)
    assert str(info.value).startswith("invalid setting PROCESSOR_ACKS (--acks): ")


def test_an_unknown_key_in_the_file_names_the_file_and_the_closest_setting(tmp_path: Path) -> None:
    config = tmp_path / "processor.toml"
    config.write_text("buffer_max_record = 10\n")
    with pytest.raises(ConfigError) as info:
        resolve_settings(config_file=config)
    assert str(info.value) == (
        f"invalid setting buffer_max_record in {config}: not a setting "
        "(did you mean buffer_max_records?)"
    )


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    config = tmp_path / "processor.toml"
    config.write_text("input_topic = \n")
    with pytest.raises(ConfigError) as info:
        resolve_settings(config_file=config)
    message = str(info.value)
    assert message.startswith(f"invalid setting PROCESSOR_CONFIG_FILE (--config): {config}: ")
    assert "line 1" in message


def test_a_misspelt_variable_is_named_with_the_closest_valid_one() -> None:
    environ = {
        "PROCESSOR_BUFER_HIGH": "0.9",
        "PROCESSOR_BUFFER_LOW": "0.4",
        "PROCESSOR_CONFIG_FILE": "x.toml",
        "PROCESSOR_ZZZ": "1",
        "HOME": "/root",
    }
    assert unknown_variables(environ) == [
        "PROCESSOR_BUFER_HIGH is not a setting and is ignored "
        "(did you mean PROCESSOR_BUFFER_HIGH?)",
        "PROCESSOR_ZZZ is not a setting and is ignored",
    ]


def test_processor_config_prints_sources_masks_secrets_and_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "processor.toml"
    config.write_text('group_id = "file-group"\n')
    monkeypatch.setenv("PROCESSOR_SASL_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("PROCESSOR_SASL_USERNAME", "svc")
    monkeypatch.setenv("PROCESSOR_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PROCESSOR_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("PROCESSOR_LINGR_MS", "3")
    code = main(["config", "--config", str(config), "--acks", "1", "--enable-idempotence", "0"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "hunter2" not in out
    lines = {line.split("  #")[0].strip(): line.rsplit("# ", 1)[1] for line in out.splitlines()[1:]}
    assert lines['sasl_password = "********"'] == "env PROCESSOR_SASL_PASSWORD"
    assert lines['acks = "1"'] == "flag --acks"
    assert lines["enable_idempotence = false"] == "flag --enable-idempotence"
    assert lines['group_id = "file-group"'] == f"file {config}"
    assert lines["linger_ms = 5"] == "default"
    assert lines["# geofences unset: points are not tagged"] == "default"
    assert err.splitlines() == [
        "processor: warning: PROCESSOR_LINGR_MS is not a setting and is ignored "
        "(did you mean PROCESSOR_LINGER_MS?)"
    ]


def test_the_printout_is_a_toml_file_that_loads_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["config", "--input-topic", 'quote"d', "--http-port", "0"]) == 0
    config = tmp_path / "printed.toml"
    config.write_text(capsys.readouterr().out)
    settings, _ = resolve_settings(config_file=config)
    assert settings.input_topic == 'quote"d'
    assert settings.http_port == 0
