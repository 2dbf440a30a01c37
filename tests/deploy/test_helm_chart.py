"""The Helm chart, rendered by Helm's own engine and checked against Kubernetes' schemas.

Rendering and linting go through ``helm-python-sdk`` (Helm's Go SDK behind a C ABI; no helm
binary, no cluster, no network). Every rendered object whose kind Kubernetes ships is
validated in strict mode (unknown fields rejected) with the schemas that
``kubernetes-validate`` bundles; custom resources (ServiceMonitor, PrometheusRule, KEDA) are
checked field by field instead.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from kubernetes_validate.utils import ValidationError as KubernetesValidationError

from processor.config import Settings, env_name
from processor.core.spill import SpilledRecord, SpillStore
from processor.durations import parse_ms
from processor.state.store import LocalStore

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "geo-stream-processor"
ALERTS = ROOT / "docs" / "monitoring" / "alerts.yaml"
RELEASE = "demo"
NAMESPACE = "streams"
FULLNAME = f"{RELEASE}-geo-stream-processor"
# Oldest supported (Chart.yaml kubeVersion) and a recent release.
KUBE_VERSIONS = ("1.27.0", "1.33.0")
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
# libyaml's loader when pyyaml has it: parsing dominates the run time otherwise.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SELECTOR = {
    "app.kubernetes.io/name": "geo-stream-processor",
    "app.kubernetes.io/instance": RELEASE,
}

SASL_TLS: dict[str, Any] = {
    "kafka": {
        "bootstrapServers": "broker-0.kafka:9093,broker-1.kafka:9093",
        "sasl": {
            "enabled": True,
            "mechanism": "SCRAM-SHA-512",
            "username": "geo-processor",
            "existingSecret": "kafka-credentials",
            "passwordKey": "sasl-password",
        },
        "tls": {"enabled": True, "caSecret": "kafka-ca", "caKey": "ca.pem"},
    }
}

WINDOWS: dict[str, Any] = {
    "windows": {"enabled": True, "aggregateFields": ["pm25", "pm10"], "dedup": True}
}
#: The settings of windows (docs/state.md): the chart passes none of them while they are off.
WINDOW_SETTINGS = {
    env_name(field)
    for field in (
        "window",
        "aggregate_fields",
        "allowed_lateness",
        "aggregates_topic",
        "dedup",
    )
}

SCENARIOS: dict[str, dict[str, Any] | None] = {
    "defaults": None,
    "deployment": {"workload": {"kind": "Deployment"}},
    "hpa": {
        "autoscaling": {"enabled": True, "maxReplicas": 12, "targetMemoryUtilizationPercentage": 80}
    },
    "deployment-hpa": {"workload": {"kind": "Deployment"}, "autoscaling": {"enabled": True}},
    "keda": {"keda": {"enabled": True, "lagThreshold": 5000}},
    "sasl-tls": SASL_TLS,
    "keda-sasl-tls-mtls": {
        "keda": {"enabled": True},
        "kafka": {
            "sasl": {
                "enabled": True,
                "mechanism": "SCRAM-SHA-256",
                "existingSecret": "kafka-credentials",
                "usernameKey": "username",
            },
            "tls": {"enabled": True, "caSecret": "kafka-ca", "clientCertSecret": "client-tls"},
        },
    },
    "servicemonitor-otel": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "otel": {"enabled": True, "resourceAttributes": {"deployment.environment": "prod"}},
    },
    "prometheusrule": {
        "metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}}
    },
    "no-persistence-minimal": {
        "spill": {"persistence": {"enabled": False}},
        "podDisruptionBudget": {"enabled": False},
        "serviceAccount": {"create": False},
        "tests": {"enabled": False},
        "resources": {"limits": {"memory": None}},
    },
    "windows": WINDOWS,
}


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render_files(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@pytest.fixture(scope="module", autouse=True)
def _read_kubernetes_schemas_once() -> Iterator[None]:
    """kubernetes-validate re-reads its 1.4 MB definitions file for every object it checks;
    memoizing that read makes the validation ~10x faster (same schemas, same result)."""
    original = kubernetes_validate.utils.schema_contents
    kubernetes_validate.utils.schema_contents = functools.cache(original)
    yield
    kubernetes_validate.utils.schema_contents = original


_rendered: dict[str, list[dict[str, Any]]] = {}


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All rendered Kubernetes objects (NOTES.txt excluded); a fresh copy per call."""
    key = json.dumps(values, sort_keys=True)
    if key not in _rendered:
        objects = []
        for path, text in sorted(render_files(chart, values).items()):
            if not path.endswith("NOTES.txt"):
                objects.extend(doc for doc in yaml.load_all(text, Loader=YAML_LOADER) if doc)
        _rendered[key] = objects
    return copy.deepcopy(_rendered[key])


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] in ("StatefulSet", "Deployment")]
    assert len(found) == 1, [o["kind"] for o in found]
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = workload(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(objects)["env"]}


def env_values(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {name: item["value"] for name, item in env_of(objects).items() if "value" in item}


def memory_mib(quantity: str) -> int:
    """Kubernetes memory quantity -> whole MiB, independently of the chart's template."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    assert match, quantity
    factor = {
        None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    }[match.group(2)]  # fmt: skip
    return int(float(match.group(1)) * factor) // 2**20


# --- lint and values schema --------------------------------------------------------------


def test_chart_metadata(chart: helm.Chart) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "geo-stream-processor"
    assert meta["type"] == "application"
    assert not chart.dependencies, "the chart must render offline, without dependencies"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lint_is_clean_in_strict_mode(kube_version: str) -> None:
    report = helm.lint(CHART_DIR, strict=True, kube_version=f"v{kube_version}")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert problems == []


@pytest.mark.parametrize("name", [n for n, v in SCENARIOS.items() if v])
def test_lint_is_clean_for_each_scenario(name: str) -> None:
    report = helm.lint(CHART_DIR, SCENARIOS[name], strict=True)
    assert report["errors"] == []


def test_lint_reports_a_misspelt_values_key() -> None:
    report = helm.lint(CHART_DIR, {"replicaCont": 2})
    assert report["errors"]
    assert any("replicaCont" in error for error in report["errors"])


def test_values_yaml_is_valid_against_its_draft7_schema() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    # Strict where typos matter: the top level and the main sections reject unknown keys.
    assert schema["additionalProperties"] is False
    for section in ("workload", "image", "kafka", "processor", "spill", "otel", "keda"):
        assert schema["properties"][section]["additionalProperties"] is False, section
    assert set(values) <= set(schema["properties"])


TYPOS = [
    pytest.param({"replicaCont": 2}, id="top-level"),
    pytest.param({"kafka": {"sasl": {"enabeld": True}}}, id="kafka.sasl"),
    pytest.param({"processor": {"shutdownTimeoutSecond": 10}}, id="processor"),
    pytest.param({"workload": {"kind": "DaemonSet"}}, id="workload.kind-enum"),
    pytest.param({"keda": {"lagTreshold": 10}}, id="keda"),
    pytest.param({"resources": {"limits": {"memory": "lots"}}}, id="memory-quantity"),
    pytest.param({"kafka": {"acks": "2"}}, id="acks"),
    pytest.param({"windows": {"enabeld": True}}, id="windows"),
    pytest.param({"windows": {"length": "1 hour"}}, id="windows.length-duration"),
    pytest.param({"windows": {"length": "0m"}}, id="windows.length-zero"),
    pytest.param({"windows": {"length": 3600}}, id="windows.length-number"),
    pytest.param({"windows": {"allowedLateness": "10min"}}, id="windows.allowedLateness"),
    pytest.param({"windows": {"aggregateFields": ["pm25,pm10"]}}, id="windows.aggregateFields"),
    pytest.param({"qc": {"enabeld": False}}, id="qc"),
    pytest.param({"qc": {"tests": {"pm25": {"spike_fai": 80}}}}, id="qc.tests-key"),
]


@pytest.mark.parametrize("values", TYPOS)
def test_schema_rejects_typos_in_jsonschema_and_in_helm(
    chart: helm.Chart, values: dict[str, Any]
) -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(chart.merge_values(values))
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)


# --- every object is valid Kubernetes ---------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_rendered_objects_are_valid_kubernetes(
    chart: helm.Chart, name: str, kube_version: str
) -> None:
    objects = render(chart, SCENARIOS[name])
    assert objects
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except SchemaNotFoundError as exc:  # pragma: no cover - names the object on failure
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
        except KubernetesValidationError as exc:  # pragma: no cover
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message}")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_labels_and_selectors(chart: helm.Chart, name: str) -> None:
    objects = render(chart, SCENARIOS[name])
    for obj in objects:
        labels = obj["metadata"]["labels"]
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for key, value in SELECTOR.items():
            assert labels.get(key) == value, where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["app.kubernetes.io/version"] == chart.metadata["appVersion"], where
        assert labels["helm.sh/chart"] == f"geo-stream-processor-{chart.version}", where
    wl = workload(objects)
    pod_labels = wl["spec"]["template"]["metadata"]["labels"]
    assert wl["spec"]["selector"]["matchLabels"] == SELECTOR
    assert SELECTOR.items() <= pod_labels.items()
    for service in by_kind(objects, "Service"):
        assert service["spec"]["selector"] == SELECTOR
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"] == SELECTOR


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_env_is_well_formed_and_matches_processor_settings(chart: helm.Chart, name: str) -> None:
    objects = render(chart, SCENARIOS[name])
    names = [item["name"] for item in container(objects)["env"]]
    assert len(names) == len(set(names)), "duplicate env vars"
    known = {env_name(field) for field in Settings.model_fields}
    unknown = {n for n in names if n.startswith("PROCESSOR_")} - known
    assert not unknown, f"not settings of processor.config.Settings: {unknown}"


def processor_settings(objects: list[dict[str, Any]]) -> Settings:
    """The Settings the processor builds from the rendered PROCESSOR_* env vars."""
    overrides = {
        key.removeprefix("PROCESSOR_").lower(): value.replace("$(POD_NAME)", f"{FULLNAME}-0")
        for key, value in env_values(objects).items()
        if key.startswith("PROCESSOR_")
    }
    return Settings(**overrides)


@pytest.mark.parametrize(
    "name", ["defaults", "deployment", "hpa", "servicemonitor-otel", "windows"]
)
def test_rendered_settings_are_accepted_by_the_processor(chart: helm.Chart, name: str) -> None:
    settings = processor_settings(render(chart, SCENARIOS[name]))
    assert settings.memory_limit_mb == 1024
    assert settings.spill_dir == Path("/var/lib/processor/spill")
    assert settings.security_protocol == "PLAINTEXT"


# --- workload shape ----------------------------------------------------------------------


def test_default_is_a_statefulset_with_a_spill_pvc_per_pod(chart: helm.Chart) -> None:
    objects = render(chart)
    assert not by_kind(objects, "Deployment")
    sts = one(objects, "StatefulSet")
    spec = sts["spec"]
    assert sts["metadata"]["name"] == FULLNAME
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spill"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Delete",
    }
    pod = spec["template"]["spec"]
    assert "spill" not in {v["name"] for v in pod["volumes"]}, "the PVC must provide the volume"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["spill"] == "/var/lib/processor/spill"
    assert env_values(objects)["PROCESSOR_SPILL_DIR"] == mounts["spill"]
    # The governing headless Service exists and is the StatefulSet's serviceName.
    headless = [s for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [spec["serviceName"]]


def test_deployment_mode_uses_an_emptydir_for_spill(chart: helm.Chart) -> None:
    objects = render(chart, {"workload": {"kind": "Deployment"}})
    assert not by_kind(objects, "StatefulSet")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spill"]["emptyDir"] == {"sizeLimit": "2Gi"}
    assert "volumeClaimTemplates" not in deployment["spec"]
    assert all(s["spec"].get("clusterIP") != "None" for s in by_kind(objects, "Service"))


def test_statefulset_without_persistence_uses_an_emptydir(chart: helm.Chart) -> None:
    objects = render(chart, {"spill": {"persistence": {"enabled": False}}})
    sts = one(objects, "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["spill"]


def test_probes_use_healthz_and_readyz_on_the_http_port(chart: helm.Chart) -> None:
    objects = render(chart, {"processor": {"httpPort": 9090}})
    main = container(objects)
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert main["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert env_values(objects)["PROCESSOR_HTTP_PORT"] == "9090"
    assert main["args"][0] == "run"


@pytest.mark.parametrize(
    "memory", ["1Gi", "1536Mi", "2G", "1.5Gi", "750M", "3Gi", "524288Ki", "805306368"]
)
def test_memory_limit_is_passed_to_the_processor_in_mib(chart: helm.Chart, memory: str) -> None:
    objects = render(chart, {"resources": {"limits": {"memory": memory}}})
    assert container(objects)["resources"]["limits"]["memory"] == memory
    assert env_values(objects)["PROCESSOR_MEMORY_LIMIT_MB"] == str(memory_mib(memory))


def test_memory_limit_default_matches_the_container_limit(chart: helm.Chart) -> None:
    objects = render(chart)
    limit = container(objects)["resources"]["limits"]["memory"]
    assert env_values(objects)["PROCESSOR_MEMORY_LIMIT_MB"] == str(memory_mib(limit)) == "1024"


def test_explicit_memory_budget_must_fit_in_the_limit(chart: helm.Chart) -> None:
    objects = render(chart, {"processor": {"memoryLimitMb": 900}})
    assert env_values(objects)["PROCESSOR_MEMORY_LIMIT_MB"] == "900"
    with pytest.raises(helm.HelmRenderError, match="memoryLimitMb"):
        render(chart, {"processor": {"memoryLimitMb": 2048}})


def test_no_memory_limit_leaves_the_budget_to_the_processor(chart: helm.Chart) -> None:
    objects = render(chart, {"resources": {"limits": {"memory": None}}})
    assert "PROCESSOR_MEMORY_LIMIT_MB" not in env_of(objects)


@pytest.mark.parametrize("timeout", [5, 30, 120])
def test_termination_grace_period_exceeds_the_shutdown_timeout(
    chart: helm.Chart, timeout: int
) -> None:
    objects = render(chart, {"processor": {"shutdownTimeoutSeconds": timeout}})
    grace = workload(objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > timeout
    assert grace == timeout + 15
    assert env_values(objects)["PROCESSOR_SHUTDOWN_TIMEOUT_S"] == str(timeout)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_security_context_is_restricted(chart: helm.Chart, name: str) -> None:
    objects = render(chart, SCENARIOS[name])
    pod = workload(objects)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    ctx = container(objects)["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    tmp = {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]
    assert "emptyDir" in tmp


# --- windows -----------------------------------------------------------------------------


def test_windows_are_off_by_default_and_render_no_window_settings(chart: helm.Chart) -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["windows"]["enabled"] is False
    configured_but_off = {"windows": {**WINDOWS["windows"], "enabled": False}}
    for objects in (render(chart), render(chart, configured_but_off)):
        assert not WINDOW_SETTINGS & set(env_of(objects))
        assert processor_settings(objects).window is None
    assert "Windows:" not in render_files(chart)["geo-stream-processor/templates/NOTES.txt"]


def test_windows_on_renders_the_settings_the_processor_reads(chart: helm.Chart) -> None:
    windows = {
        "enabled": True,
        "length": "1h30m",
        "aggregateFields": ["pm25", "pm10", "no2"],
        "allowedLateness": "90s",
        "aggregatesTopic": "geo.aggregates",
        "dedup": True,
    }
    objects = render(chart, {"windows": windows, "kafka": {"groupId": "geo-eu"}})
    env = env_values(objects)
    assert set(env) >= WINDOW_SETTINGS
    assert env["PROCESSOR_WINDOW"] == "1h30m"
    assert env["PROCESSOR_AGGREGATE_FIELDS"] == "pm25,pm10,no2"
    assert env["PROCESSOR_ALLOWED_LATENESS"] == "90s"
    assert env["PROCESSOR_AGGREGATES_TOPIC"] == "geo.aggregates"
    assert env["PROCESSOR_DEDUP"] == "true"
    settings = processor_settings(objects)
    assert settings.window == 90 * 60_000
    assert settings.aggregate_fields == ("pm25", "pm10", "no2")
    assert settings.allowed_lateness == 90_000
    assert settings.aggregates_topic == "geo.aggregates"
    assert settings.dedup is True
    assert settings.state_dir == Path("/var/lib/processor/spill/state")
    notes = render_files(chart, {"windows": windows, "kafka": {"groupId": "geo-eu"}})[
        "geo-stream-processor/templates/NOTES.txt"
    ]
    assert settings.changelog_topic == "geo-eu-windows-changelog"
    assert settings.changelog_topic in notes
    assert "geo.aggregates" in notes


def test_windows_without_fields_take_the_profiles(chart: helm.Chart) -> None:
    profile = [{"name": "PROCESSOR_PROFILE", "value": "air_quality"}]
    objects = render(chart, {"windows": {"enabled": True}, "extraEnv": profile})
    env = env_values(objects)
    assert "PROCESSOR_AGGREGATE_FIELDS" not in env
    assert (env["PROCESSOR_WINDOW"], env["PROCESSOR_DEDUP"]) == ("1h", "false")
    assert processor_settings(objects).aggregate_fields == ("pm25", "pm10")


def test_windows_refuse_acks_0(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"windows\.enabled needs kafka\.acks"):
        render(chart, {**WINDOWS, "kafka": {"acks": "0"}})
    assert env_values(render(chart, {"kafka": {"acks": "0"}}))["PROCESSOR_ACKS"] == "0"


@pytest.mark.parametrize(
    ("values", "volume_source"),
    [
        pytest.param({}, "volumeClaimTemplates", id="statefulset-pvc"),
        pytest.param({"spill": {"persistence": {"enabled": False}}}, "emptyDir", id="sts-emptydir"),
        pytest.param({"workload": {"kind": "Deployment"}}, "emptyDir", id="deployment"),
    ],
)
def test_the_state_lives_on_the_spill_volume(
    chart: helm.Chart, values: dict[str, Any], volume_source: str
) -> None:
    spill = {**values.get("spill", {}), "mountPath": "/data/spill/"}
    values = {**values, **WINDOWS, "spill": spill}
    objects = render(chart, values)
    env = env_values(objects)
    state_dir, spill_dir = env["PROCESSOR_STATE_DIR"], env["PROCESSOR_SPILL_DIR"]
    assert state_dir == "/data/spill/state"
    mounts = container(objects)["volumeMounts"]
    (mount,) = [m for m in mounts if state_dir.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mount["name"] == "spill"
    assert mount["mountPath"] == spill_dir
    # One mount of the volume, none with subPath: a subPath directory would be the kubelet's
    # (root's), where the processor could not write.
    assert [m["name"] for m in mounts].count("spill") == 1
    assert all("subPath" not in m for m in mounts)
    spec = workload(objects)["spec"]
    if volume_source == "volumeClaimTemplates":
        assert [c["metadata"]["name"] for c in spec["volumeClaimTemplates"]] == ["spill"]
        assert "spill" not in {v["name"] for v in spec["template"]["spec"]["volumes"]}
    else:
        assert "volumeClaimTemplates" not in spec
        volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes["spill"]
    notes = render_files(chart, values)["geo-stream-processor/templates/NOTES.txt"]
    persisted = "kept across restarts" in notes
    assert persisted is (volume_source == "volumeClaimTemplates")
    assert ("rebuilds it from the changelog" in notes) is not persisted


def test_the_spill_and_the_state_on_one_volume_never_touch_each_other(
    chart: helm.Chart, tmp_path: Path
) -> None:
    """Both stores keep <their dir>/<input topic>/<partition>/; with the chart's layout they
    stay apart even for an input topic named like the state's directory."""
    env = env_values(render(chart, {**WINDOWS, "kafka": {"topics": {"input": "state"}}}))
    topic = env["PROCESSOR_INPUT_TOPIC"]
    spill_dir = tmp_path / env["PROCESSOR_SPILL_DIR"].lstrip("/")
    state_dir = tmp_path / env["PROCESSOR_STATE_DIR"].lstrip("/")
    records = [SpilledRecord(topic, 0, offset, 0, b"s-1", b"{}") for offset in range(10, 20)]
    spill = SpillStore(spill_dir, 1 << 20, 0)
    state = LocalStore(state_dir)
    assert spill.append(topic, 0, records) == 10
    state.write(topic, 0, {b"s-1": b"row"}, b"meta")
    spill.discard(topic, 0)
    assert state.read(topic, 0)[0].keys == bytearray(b"s-1")
    assert spill.append(topic, 0, records) == 10
    state.drop(topic, 0)
    state.close()
    LocalStore(state_dir).close()  # a restart's start-up cleanup of the state directory
    again = SpillStore(spill_dir, 1 << 20, 0)
    assert again.recover(topic, 0, committed=10) == 20
    assert [r.offset for piece in again.read(topic, 0, 100) for r in piece.records] == list(
        range(10, 20)
    )


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("60s", True), ("5m", True), ("1h", True), ("1h30m", True), ("250ms", True),
        ("2d", True), ("0s", True), ("1h 30m", False), ("1hour", False), ("h", False),
        ("", False), ("5", False), ("-5m", False), ("1.5h", False), ("10min", False),
    ],
)  # fmt: skip
def test_the_schemas_durations_are_the_processors(text: str, valid: bool) -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    lateness = schema["properties"]["windows"]["properties"]["allowedLateness"]
    assert jsonschema.Draft7Validator(lateness).is_valid(text) is valid
    if valid:
        assert isinstance(parse_ms(text), int)
    elif " " not in text:  # the processor reads "1h 30m" too; the chart asks for one spelling
        with pytest.raises(ValueError, match="not a duration"):
            parse_ms(text)


# --- Kafka security ----------------------------------------------------------------------


def test_plaintext_by_default(chart: helm.Chart) -> None:
    env = env_of(render(chart))
    assert env["PROCESSOR_SECURITY_PROTOCOL"]["value"] == "PLAINTEXT"
    assert not {
        "PROCESSOR_SASL_PASSWORD",
        "PROCESSOR_SASL_MECHANISM",
        "PROCESSOR_SSL_CAFILE",
    } & set(env)


def test_sasl_password_comes_from_the_existing_secret(chart: helm.Chart) -> None:
    objects = render(chart, SASL_TLS)
    env = env_of(objects)
    assert env["PROCESSOR_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["PROCESSOR_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["PROCESSOR_SASL_USERNAME"]["value"] == "geo-processor"
    password = env["PROCESSOR_SASL_PASSWORD"]
    assert "value" not in password
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-credentials",
        "key": "sasl-password",
    }
    assert not by_kind(objects, "Secret"), "the chart must not hold credentials itself"


def test_tls_ca_is_mounted_from_a_secret_as_a_file(chart: helm.Chart) -> None:
    objects = render(chart, SASL_TLS)
    cafile = env_values(objects)["PROCESSOR_SSL_CAFILE"]
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in workload(objects)["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, m in mounts.items() if cafile.startswith(m["mountPath"] + "/")]
    assert mounts[name]["readOnly"] is True
    secret = volumes[name]["secret"]
    assert secret["secretName"] == "kafka-ca"
    assert [item["path"] for item in secret["items"]] == [cafile.rsplit("/", 1)[1]] == ["ca.pem"]
    assert [item["key"] for item in secret["items"]] == ["ca.pem"]


def test_sasl_username_can_come_from_the_secret_and_mtls_is_mounted(chart: helm.Chart) -> None:
    objects = render(chart, SCENARIOS["keda-sasl-tls-mtls"])
    env = env_of(objects)
    assert env["PROCESSOR_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-credentials",
        "key": "username",
    }
    assert env["PROCESSOR_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    certfile = env["PROCESSOR_SSL_CERTFILE"]["value"]
    keyfile = env["PROCESSOR_SSL_KEYFILE"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in workload(objects)["spec"]["template"]["spec"]["volumes"]}
    for path in (certfile, keyfile):
        directory, filename = path.rsplit("/", 1)
        assert volumes[mounts[directory]]["secret"]["secretName"] == "client-tls"
        assert filename in ("tls.crt", "tls.key")


@pytest.mark.parametrize(
    "sasl",
    [
        {"enabled": True, "username": "u"},  # no existingSecret
        {"enabled": True, "existingSecret": "s"},  # no username
    ],
)
def test_incomplete_sasl_settings_fail_to_render(chart: helm.Chart, sasl: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"kafka\.sasl"):
        render(chart, {"kafka": {"sasl": sasl}})


# --- scaling, disruption, monitoring -----------------------------------------------------


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment"])
def test_hpa_targets_the_workload_and_owns_replicas(chart: helm.Chart, kind: str) -> None:
    objects = render(
        chart,
        {"workload": {"kind": kind}, "autoscaling": {"enabled": True, "maxReplicas": 12}},
    )
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": FULLNAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 12)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in workload(objects)["spec"]
    assert not by_kind(objects, "ScaledObject")


def test_keda_scales_on_consumer_group_lag(chart: helm.Chart) -> None:
    objects = render(chart, SCENARIOS["keda"])
    scaled = one(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": FULLNAME,
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 6)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata is strings"
    env = env_values(objects)
    assert meta["lagThreshold"] == "5000"
    assert meta["consumerGroup"] == env["PROCESSOR_GROUP_ID"]
    assert meta["topic"] == env["PROCESSOR_INPUT_TOPIC"]
    assert meta["bootstrapServers"] == env["PROCESSOR_BOOTSTRAP_SERVERS"]
    assert meta["allowIdleConsumers"] == "false"
    assert "sasl" not in meta
    assert "authenticationRef" not in trigger
    assert not by_kind(objects, "TriggerAuthentication")
    assert not by_kind(objects, "HorizontalPodAutoscaler"), "KEDA creates its own HPA"
    assert "replicas" not in workload(objects)["spec"]


def test_keda_authenticates_with_the_processor_credentials(chart: helm.Chart) -> None:
    objects = render(chart, SCENARIOS["keda-sasl-tls-mtls"])
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == "scram_sha256"
    assert trigger["metadata"]["tls"] == "enable"
    auth = one(objects, "TriggerAuthentication")
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": ("kafka-credentials", "username"),
        "password": ("kafka-credentials", "password"),
        "ca": ("kafka-ca", "ca.crt"),
        "cert": ("client-tls", "tls.crt"),
        "key": ("client-tls", "tls.key"),
    }


def test_hpa_and_keda_are_exclusive(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="exclusive"):
        render(chart, {"autoscaling": {"enabled": True}, "keda": {"enabled": True}})


def test_pod_disruption_budget(chart: helm.Chart) -> None:
    pdb = one(render(chart), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    pdb = one(
        render(chart, {"podDisruptionBudget": {"maxUnavailable": None, "minAvailable": "50%"}}),
        "PodDisruptionBudget",
    )
    assert pdb["spec"] == {"minAvailable": "50%", "selector": {"matchLabels": SELECTOR}}
    with pytest.raises(helm.HelmRenderError, match="podDisruptionBudget"):
        render(chart, {"podDisruptionBudget": {"maxUnavailable": 1, "minAvailable": 1}})


def test_metrics_service_and_service_monitor(chart: helm.Chart) -> None:
    assert not by_kind(render(chart), "ServiceMonitor")
    objects = render(chart, SCENARIOS["servicemonitor-otel"])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s for s in by_kind(objects, "Service") if wanted.items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == [FULLNAME], "exactly the metrics Service"
    (port,) = selected[0]["spec"]["ports"]
    assert port["name"] == endpoint["port"]
    assert port["targetPort"] == "http"
    assert {p["name"] for p in container(objects)["ports"]} == {"http"}


def test_prometheus_rule_is_optional_and_ships_the_documented_alerts(chart: helm.Chart) -> None:
    assert not by_kind(render(chart), "PrometheusRule")
    rule = one(render(chart, SCENARIOS["prometheusrule"]), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    documented = yaml.safe_load(ALERTS.read_text())
    assert rule["spec"] == documented
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert len(alerts) == 7
    # The templates never saw the rules: Prometheus' own {{ $labels }} survive rendering.
    assert all("{{ $labels.instance }}" in r["annotations"]["summary"]
               for group in rule["spec"]["groups"] for r in group["rules"])  # fmt: skip


def test_the_charts_rules_file_is_the_documented_one() -> None:
    """The chart can only read files inside itself, so it carries a copy: kept identical."""
    assert (CHART_DIR / "files" / "alerts.yaml").read_bytes() == ALERTS.read_bytes()


def test_service_account(chart: helm.Chart) -> None:
    objects = render(chart)
    account = one(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    pod = workload(objects)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# --- settings passthrough ----------------------------------------------------------------


def test_kafka_and_processor_settings_become_env(chart: helm.Chart) -> None:
    values = {
        "kafka": {
            "bootstrapServers": "k1:9092,k2:9092",
            "groupId": "geo-eu",
            "topics": {"input": "in", "output": "out", "dlq": "dead"},
            "enableIdempotence": False,
            "acks": 1,
        },
        "processor": {"targetCrs": "EPSG:25832", "bufferMaxRecords": 100000},
        "spill": {"maxBytes": 5368709120},
    }
    env = env_values(render(chart, values))
    assert env["PROCESSOR_BOOTSTRAP_SERVERS"] == "k1:9092,k2:9092"
    assert env["PROCESSOR_GROUP_ID"] == "geo-eu"
    assert (env["PROCESSOR_INPUT_TOPIC"], env["PROCESSOR_OUTPUT_TOPIC"]) == ("in", "out")
    assert env["PROCESSOR_DLQ_TOPIC"] == "dead"
    assert env["PROCESSOR_ENABLE_IDEMPOTENCE"] == "false"
    assert env["PROCESSOR_ACKS"] == "1"
    assert env["PROCESSOR_TARGET_CRS"] == "EPSG:25832"
    assert env["PROCESSOR_BUFFER_MAX_RECORDS"] == "100000"
    assert env["PROCESSOR_SPILL_MAX_BYTES"] == "5368709120", "no float formatting of big ints"


def test_extra_env_is_passed_through(chart: helm.Chart) -> None:
    extra = [
        {"name": "PROCESSOR_LINGER_MS", "value": "10"},
        {"name": "PROCESSOR_COMPRESSION_TYPE", "value": "zstd"},
    ]
    objects = render(chart, {"extraEnv": extra, "extraArgs": ["--log-level", "DEBUG"]})
    env = env_values(objects)
    assert (env["PROCESSOR_LINGER_MS"], env["PROCESSOR_COMPRESSION_TYPE"]) == ("10", "zstd")
    assert container(objects)["args"] == ["run", "--log-level", "DEBUG"]


def test_otel_settings(chart: helm.Chart) -> None:
    objects = render(chart, SCENARIOS["servicemonitor-otel"])
    env = env_values(objects)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http")
    assert env["OTEL_SERVICE_NAME"] == FULLNAME
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert env["OTEL_METRICS_EXPORTER"] == "otlp"
    attributes = dict(kv.split("=", 1) for kv in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes["k8s.pod.name"] == "$(POD_NAME)"
    assert attributes["deployment.environment"] == "prod"
    names = [item["name"] for item in container(objects)["env"]]
    # $(POD_NAME) is only expanded when POD_NAME is defined earlier in the list.
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert names.index("POD_NAME") < names.index("PROCESSOR_CLIENT_ID")
    disabled = env_values(render(chart))
    assert disabled["OTEL_TRACES_EXPORTER"] == "none"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in disabled


def test_notes_explain_idle_replicas(chart: helm.Chart) -> None:
    notes = render_files(chart)["geo-stream-processor/templates/NOTES.txt"]
    assert "sit idle" in notes
    assert "45s" in notes  # terminationGracePeriodSeconds
    values_text = (CHART_DIR / "values.yaml").read_text()
    assert "sit idle" in values_text


# --- quality control -----------------------------------------------------------------------


def test_qc_tests_reach_the_processor_as_the_json_it_reads(chart: helm.Chart) -> None:
    tests = {
        "pm25": {"spike_fail": 80, "flat_line_suspect": False},
        "battery": {"gross_range_fail": [3.0, 4.3]},
    }
    settings = processor_settings(render(chart, {"qc": {"tests": tests}}))
    assert settings.qc == tests
    assert settings.qc_spec is not None
    assert settings.qc_spec.fields == ("battery", "pm25")  # pm25: the spike test alone
    assert settings.qc_enabled
    # The state directory is on the spill volume whether windows are on or not: QC keeps state.
    spill = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["spill"]["mountPath"]
    assert settings.state_dir == Path(spill) / "state"


def test_qc_can_be_turned_off_and_renders_no_tests_by_default(chart: helm.Chart) -> None:
    assert "PROCESSOR_QC" not in env_of(render(chart))
    settings = processor_settings(render(chart, {"qc": {"enabled": False}}))
    assert not settings.qc_enabled
