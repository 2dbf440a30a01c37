"""docker-compose.yml, checked without Docker.

The Compose Specification JSON schema comes from the PyPI package ``check-jsonschema``,
which vendors it (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``, from
github.com/compose-spec/compose-spec, Apache-2.0) for its ``check-compose-spec`` hook.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.protocols import Validator

from processor.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TOPICS = ("sensor.readings", "sensor.points", "sensor.readings.dlq")
AGGREGATES = "sensor.aggregates"
# ${NAME}, ${NAME:-default}, ${NAME-default}; $$ is a literal dollar.
VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
)


def compose_spec_schema() -> dict[str, Any]:
    # Located through the distribution's files: importing check_jsonschema loads its CLI.
    path = metadata.distribution("check-jsonschema").locate_file(
        "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
    )
    schema: dict[str, Any] = json.loads(Path(str(path)).read_text())
    return schema


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Compose's variable interpolation, enough for this file."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group("name", "op", "default")
        current = environ.get(name)
        if op == ":-" and not current:
            return default
        if op == "-" and current is None:
            return default
        return current or ""

    return VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def validator() -> Validator:
    schema = compose_spec_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as `docker compose` sees it with no variables set."""
    resolved: dict[str, Any] = interpolate(raw, {})
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    return total


# --- schema --------------------------------------------------------------------------------


def test_valid_against_the_compose_specification(
    validator: Validator, compose: dict[str, Any]
) -> None:
    assert compose_spec_schema().get("$id") == "compose_spec.json"
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_the_schema_catches_mistakes(validator: Validator, compose: dict[str, Any]) -> None:
    """Guards the test above: the schema really is strict about keys and conditions."""
    typo = json.loads(json.dumps(compose))
    typo["services"]["processor"]["healthchek"] = typo["services"]["processor"].pop("healthcheck")
    assert not validator.is_valid(typo)
    condition = json.loads(json.dumps(compose))
    condition["services"]["processor"]["depends_on"]["redpanda"]["condition"] = "healthy"
    assert not validator.is_valid(condition)


def test_every_variable_has_a_default(raw: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    for match in VARIABLE.finditer(text):
        if match.group(0) != "$$":
            assert match.group("op") == ":-", f"${{{match.group('name')}}} needs a :- default"
    overridden = interpolate(raw, {"TOPIC_PARTITIONS": "12"})["services"]["create-topics"]
    assert environment(overridden)["TOPIC_PARTITIONS"] == "12"


# --- services ------------------------------------------------------------------------------


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "redpanda",
        "create-topics",
        "processor",
        "sample-producer",
        "otel-collector",
        "jaeger",
    }


def test_redpanda_is_single_node_with_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    redpanda = services["redpanda"]
    assert "redpanda" in redpanda["image"]
    command = " ".join(redpanda["command"])
    assert "--smp=1" in command
    assert "redpanda:9092" in command  # the address advertised to the other containers
    test = redpanda["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert "rpk cluster health" in test[1]
    assert "Healthy" in test[1]


def test_topics_are_created_once_redpanda_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    setup = services["create-topics"]
    assert setup["depends_on"] == {"redpanda": {"condition": "service_healthy"}}
    assert setup["restart"] == "no"
    env = environment(setup)
    assert env["TOPIC_PARTITIONS"] == "6"
    assert tuple(env["TOPICS"].split()) == (*TOPICS, AGGREGATES)
    assert env["RPK_BROKERS"] == "redpanda:9092"
    script = setup["command"][0]
    assert "rpk topic create" in script
    assert '--partitions "$TOPIC_PARTITIONS"' in script
    assert "set -eu" in script  # a failed create fails the one-shot, so nothing starts


@pytest.mark.parametrize("name", ["processor", "sample-producer"])
def test_waits_for_broker_and_topics(services: dict[str, dict[str, Any]], name: str) -> None:
    depends = services[name]["depends_on"]
    assert depends["redpanda"] == {"condition": "service_healthy"}
    assert depends["create-topics"] == {"condition": "service_completed_successfully"}
    assert depends["otel-collector"] == {"condition": "service_started"}


def test_processor_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    processor = services["processor"]
    assert "container_name" not in processor
    for port in processor.get("ports", []):
        if isinstance(port, dict):
            assert "published" not in port, port
        else:
            assert ":" not in str(port), f"fixed host port {port} breaks --scale"
    assert "hostname" not in processor
    # No named volume on the spill directory: replicas must not share spill files.
    spill_dir = environment(processor).get("PROCESSOR_SPILL_DIR", "/var/lib/processor/spill")
    for volume in processor.get("volumes", []):
        target = volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
        assert target != spill_dir
    assert "replicas" not in processor.get("deploy", {}), "leave the count to --scale"
    assert processor["build"]["context"] == "."
    assert processor["command"] == ["run"]


def test_processor_environment(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["processor"])
    assert env["PROCESSOR_BOOTSTRAP_SERVERS"] == "redpanda:9092"
    assert env["PROCESSOR_ENABLE_IDEMPOTENCE"] == "true"
    assert env["PROCESSOR_GROUP_ID"]
    assert (
        env["PROCESSOR_INPUT_TOPIC"],
        env["PROCESSOR_OUTPUT_TOPIC"],
        env["PROCESSOR_DLQ_TOPIC"],
    ) == TOPICS
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["OTEL_SERVICE_NAME"] == "geo-stream-processor"
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    known = {env_name(field) for field in Settings.model_fields}
    assert {key for key in env if key.startswith("PROCESSOR_")} <= known


@pytest.mark.parametrize("name", ["processor", "sample-producer"])
def test_environment_is_accepted_by_the_processor_settings(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = environment(services[name])
    settings = Settings(
        **{
            key.removeprefix("PROCESSOR_").lower(): value
            for key, value in env.items()
            if key.startswith("PROCESSOR_")
        }
    )
    assert settings.enable_idempotence is True
    assert settings.bootstrap_servers == "redpanda:9092"


def test_processor_shows_windows_with_state_on_its_spill_volume(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment(services["processor"])
    settings = Settings(
        **{
            key.removeprefix("PROCESSOR_").lower(): value
            for key, value in env.items()
            if key.startswith("PROCESSOR_")
        }
    )
    assert settings.window == 3_600_000
    assert settings.aggregate_fields == ("pm25",)  # the field `processor sample` writes
    assert settings.dedup is True
    created = environment(services["create-topics"])["TOPICS"].split()
    assert settings.aggregates_topic in created
    assert settings.changelog_topic not in created, "the processor creates its changelog"
    # On the replica's own anonymous spill volume (the Dockerfile's VOLUME), in a folder of
    # its own: the spill and the state store both keep <dir>/<topic>/<partition>/.
    spill_dir = Path(env.get("PROCESSOR_SPILL_DIR", "/var/lib/processor/spill"))
    assert settings.state_dir.parent == spill_dir
    assert "PROCESSOR_WINDOW" not in environment(services["sample-producer"])


def test_processor_health_check_and_graceful_stop(services: dict[str, dict[str, Any]]) -> None:
    processor = services["processor"]
    env = environment(processor)
    test = processor["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3]
    compile(code, "healthcheck", "exec")
    assert f"127.0.0.1:{env['PROCESSOR_HTTP_PORT']}/healthz" in code
    assert "urllib.request" in code
    assert seconds(processor["stop_grace_period"]) > float(env["PROCESSOR_SHUTDOWN_TIMEOUT_S"])


def test_sample_producer(services: dict[str, dict[str, Any]]) -> None:
    producer = services["sample-producer"]
    command = producer["command"]
    assert command[0] == "sample"
    assert command[command.index("--rate") + 1] == "200"
    assert command[command.index("--sensors") + 1] == "50"
    assert producer["image"] == services["processor"]["image"]
    assert producer["healthcheck"] == {"disable": True}
    env = environment(producer)
    assert env["PROCESSOR_INPUT_TOPIC"] == TOPICS[0]
    assert env["OTEL_SERVICE_NAME"] != environment(services["processor"])["OTEL_SERVICE_NAME"]


def test_otel_collector_forwards_traces_to_jaeger(services: dict[str, dict[str, Any]]) -> None:
    collector = services["otel-collector"]
    (mount,) = collector["volumes"]
    source, target = mount.split(":")[:2]
    config_file = ROOT / source
    assert config_file.is_file()
    assert f"--config={target}" in collector["command"]
    config = yaml.safe_load(config_file.read_text())
    receivers = config["receivers"]["otlp"]["protocols"]
    assert receivers["http"]["endpoint"] == "0.0.0.0:4318"  # what OTEL_EXPORTER_OTLP_ENDPOINT names
    assert receivers["grpc"]["endpoint"] == "0.0.0.0:4317"
    pipelines = config["service"]["pipelines"]
    assert "otlp" in pipelines["traces"]["receivers"]
    jaeger_exporters = [e for e in pipelines["traces"]["exporters"] if e.startswith("otlp")]
    assert jaeger_exporters
    assert config["exporters"][jaeger_exporters[0]]["endpoint"] == "jaeger:4317"
    assert "metrics" in pipelines
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(config[kind]), "undefined component"
    assert collector["depends_on"] == {"jaeger": {"condition": "service_started"}}
    assert "16686:16686" in services["jaeger"]["ports"]


def test_no_credentials_and_no_obsolete_version_key(raw: dict[str, Any]) -> None:
    assert "PASSWORD" not in COMPOSE_FILE.read_text().upper()
    assert "version" not in raw, "the top-level version key is obsolete"
