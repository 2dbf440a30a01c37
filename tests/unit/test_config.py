"""processor.config.load_settings: sources, priorities and one-line errors naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiokafka import codec
from pydantic import SecretStr

from processor.config import Settings, env_name, flag_name
from processor.config_sources import load_settings
from processor.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PROCESSOR_"):
            monkeypatch.delenv(name)


BAD_VALUES = [
    pytest.param({"buffer_high": "1.5"}, "PROCESSOR_BUFFER_HIGH", id="buffer_high>1"),
    pytest.param({"buffer_high": "0"}, "PROCESSOR_BUFFER_HIGH", id="buffer_high=0"),
    pytest.param(
        {"buffer_low": "0.8", "buffer_high": "0.8"}, "PROCESSOR_BUFFER_LOW", id="low=high"
    ),
    pytest.param(
        {"buffer_low": "0.9", "buffer_high": "0.5"}, "PROCESSOR_BUFFER_LOW", id="low>high"
    ),
    pytest.param({"memory_hysteresis": "0.05"}, "PROCESSOR_MEMORY_HYSTERESIS", id="hysteresis"),
    pytest.param({"acks": "2"}, "PROCESSOR_ACKS", id="acks"),
    pytest.param(
        {"window": "60s", "aggregate_fields": "temperature", "acks": "0"},
        "PROCESSOR_ACKS",
        id="windows_without_acks",
    ),
    pytest.param({"http_port": "abc"}, "PROCESSOR_HTTP_PORT", id="http_port"),
    pytest.param({"http_port": "70000"}, "PROCESSOR_HTTP_PORT", id="http_port_range"),
    pytest.param({"buffer_max_records": "-5"}, "PROCESSOR_BUFFER_MAX_RECORDS", id="buffer_max"),
    pytest.param({"memory_limit_mb": "lots"}, "PROCESSOR_MEMORY_LIMIT_MB", id="memory_limit"),
    pytest.param(
        {"security_protocol": "SASL_SSL"}, "PROCESSOR_SASL_MECHANISM", id="sasl_no_credentials"
    ),
    pytest.param(
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
        "PROCESSOR_SASL_MECHANISM",
        id="sasl_no_password",
    ),
    pytest.param(
        {"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"},
        "PROCESSOR_SSL_CAFILE",
        id="ssl_cafile_missing",
    ),
    pytest.param({"security_protocol": "TLS"}, "PROCESSOR_SECURITY_PROTOCOL", id="protocol"),
]


def assert_one_line(error: ConfigError, variable: str) -> None:
    message = str(error)
    assert variable in message
    assert "\n" not in message
    assert message.startswith("invalid setting ")


@pytest.mark.parametrize(("values", "variable"), BAD_VALUES)
def test_bad_flag_values_name_the_variable(values: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(values)
    assert_one_line(info.value, variable)
    field = variable.removeprefix("PROCESSOR_").lower()
    assert flag_name(field) in str(info.value)


@pytest.mark.parametrize(("values", "variable"), BAD_VALUES)
def test_bad_env_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], variable: str
) -> None:
    for field, value in values.items():
        monkeypatch.setenv(env_name(field), value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_one_line(info.value, variable)


def test_ssl_cafile_that_exists_is_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings({"security_protocol": "SSL", "ssl_cafile": str(ca)})
    assert settings.ssl_cafile == ca


def test_defaults() -> None:
    settings = load_settings()
    assert settings.bootstrap_servers == "localhost:9092"
    assert settings.input_topic == "sensor.readings"
    assert settings.output_topic == "sensor.points"
    assert settings.dlq_topic == "sensor.readings.dlq"
    assert settings.target_crs == "EPSG:3857"
    assert settings.memory_limit_mb is None
    assert settings.memory_resume == pytest.approx(settings.memory_high - 0.10)
    assert settings.memory_hysteresis >= 0.08


def test_env_vars_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("PROCESSOR_INPUT_TOPIC", "in")
    monkeypatch.setenv("PROCESSOR_OUTPUT_TOPIC", "out")
    monkeypatch.setenv("PROCESSOR_DLQ_TOPIC", "dlq")
    monkeypatch.setenv("PROCESSOR_GROUP_ID", "g")
    monkeypatch.setenv("PROCESSOR_SPILL_DIR", "/var/spill")
    monkeypatch.setenv("PROCESSOR_TARGET_CRS", "EPSG:32632")
    monkeypatch.setenv("PROCESSOR_BUFFER_MAX_RECORDS", "5000")
    monkeypatch.setenv("PROCESSOR_MEMORY_LIMIT_MB", "512")
    monkeypatch.setenv("PROCESSOR_ENABLE_IDEMPOTENCE", "false")
    settings = load_settings()
    assert settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert (settings.input_topic, settings.output_topic, settings.dlq_topic) == ("in", "out", "dlq")
    assert settings.group_id == "g"
    assert settings.spill_dir == Path("/var/spill")
    assert settings.target_crs == "EPSG:32632"
    assert settings.buffer_max_records == 5000
    assert settings.memory_limit_mb == 512
    assert settings.enable_idempotence is False


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_INPUT_TOPIC", "from-env")
    monkeypatch.setenv("PROCESSOR_BUFFER_MAX_RECORDS", "5000")
    settings = load_settings({"input_topic": "from-flag", "buffer_max_records": None})
    assert settings.input_topic == "from-flag"
    assert settings.buffer_max_records == 5000  # an unset flag (None) leaves env in place


def test_valid_flag_overrides_bad_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_ACKS", "2")
    assert load_settings({"acks": "1"}).acks == "1"


def test_config_file_is_the_lowest_priority(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "processor.toml"
    config.write_text(
        'input_topic = "from-file"\n'
        'output_topic = "file-out"\n'
        'group_id = "file-group"\n'
        "buffer-max-records = 777\n"
    )
    monkeypatch.setenv("PROCESSOR_OUTPUT_TOPIC", "env-out")
    monkeypatch.setenv("PROCESSOR_GROUP_ID", "env-group")
    settings = load_settings({"group_id": "flag-group"}, config_file=config)
    assert settings.input_topic == "from-file"
    assert settings.buffer_max_records == 777
    assert settings.output_topic == "env-out"
    assert settings.group_id == "flag-group"


def test_config_file_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "processor.toml"
    config.write_text('dlq_topic = "file-dlq"\n')
    monkeypatch.setenv("PROCESSOR_CONFIG_FILE", str(config))
    assert load_settings().dlq_topic == "file-dlq"


def test_bad_value_in_config_file_names_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "processor.toml"
    config.write_text('acks = "2"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config)
    assert_one_line(info.value, "PROCESSOR_ACKS")


@pytest.mark.parametrize("content", [None, "input_topic = \n"])
def test_unreadable_config_file(tmp_path: Path, content: str | None) -> None:
    config = tmp_path / "processor.toml"
    if content is not None:
        config.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config)
    assert_one_line(info.value, "PROCESSOR_CONFIG_FILE")


def test_unknown_key_in_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "processor.toml"
    config.write_text('no_such_setting = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config)
    assert "no_such_setting" in str(info.value)
    assert "\n" not in str(info.value)


def test_sasl_password_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_SASL_PASSWORD", "hunter2-very-secret")
    settings = load_settings(
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
        }
    )
    assert isinstance(settings.sasl_password, SecretStr)
    assert settings.sasl_password.get_secret_value() == "hunter2-very-secret"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
    assert "hunter2" not in settings.model_dump_json()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.input_topic = "other"  # type: ignore[misc]


def test_every_setting_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert env_name(name) == "PROCESSOR_" + name.upper()


@pytest.mark.parametrize("name", ["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_kafka_defines_comes_with_the_install(name: str) -> None:
    # The dependencies bring aiokafka's codec libraries, so any producer's compression decodes
    # on input and any of them can be chosen for the outputs.
    assert getattr(codec, f"has_{name}")()
    assert load_settings({"compression_type": name}).compression_type == name


# Quality control thresholds: the profile's tables, overridden key by key.


def test_a_profile_brings_its_qc_tables_and_no_profile_none() -> None:
    assert Settings().qc_spec is None
    assert not Settings().has_state
    spec = Settings(profile="air_quality").qc_spec
    assert spec is not None
    assert spec.fields == ("pm10", "pm25")
    assert Settings(profile="air_quality").has_state
    assert Settings(profile="air_quality", qc_enabled=False).qc_spec is None


def test_qc_tables_override_the_profile_key_by_key_and_false_unsets_a_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "qc.toml"
    path.write_text(
        'profile = "air_quality"\n[qc.pm25]\nspike_fail = 80\nflat_line_suspect = false\n'
        "flat_line_fail = false\nflat_line_tolerance = false\n[qc.battery]\n"
        "gross_range_fail = [3.0, 4.3]\n"
    )
    settings = load_settings(config_file=path)
    assert settings.qc["pm25"]["spike_fail"] == 80
    assert settings.qc["pm25"]["spike_suspect"] == 35.0  # the profile's, kept
    assert "flat_line_suspect" not in settings.qc["pm25"]
    assert settings.qc_spec is not None
    assert settings.qc_spec.fields == ("battery", "pm10", "pm25")
    assert settings.state_fields == ("battery", "pm10", "pm25")
    windowed = Settings(profile="air_quality", window=60_000, aggregate_fields="pm25,temp")
    assert windowed.state_fields == ("pm25", "temp", "pm10")


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ('{"pm25": {"spike_fai": 3}}', "qc.pm25.spike_fai (PROCESSOR_QC, --qc): not a QC"),
        ('{"pm25": {"spike_fail": -3}}', "qc.pm25.spike_fail (PROCESSOR_QC, --qc): must be"),
        ('{"pm25": 3}', "qc.pm25 (PROCESSOR_QC, --qc): must be a table"),
        ("[1", "PROCESSOR_QC (--qc): not JSON"),
    ],
)
def test_a_bad_qc_table_names_the_key(
    monkeypatch: pytest.MonkeyPatch, tables: str, message: str
) -> None:
    monkeypatch.setenv("PROCESSOR_QC", tables)
    with pytest.raises(
        ConfigError, match="invalid setting " + message.replace("(", r"\(").replace(")", r"\)")
    ):
        load_settings()


def test_qc_needs_acknowledgements() -> None:
    with pytest.raises(ValueError, match="acks: QC needs"):
        Settings(profile="air_quality", acks="0")
