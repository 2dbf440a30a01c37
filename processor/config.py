"""Every setting of the processor, parsed and validated in this one place.

Sources, highest priority first: command-line flags, ``PROCESSOR_*`` environment variables,
a TOML file (``--config`` / ``PROCESSOR_CONFIG_FILE``), defaults; they are read, and a bad
value becomes a ``ConfigError`` whose one-line message names the environment variable and the
flag, in :mod:`processor.config_sources`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from processor.durations import DurationMs
from processor.qc.profiles import PROFILE_QC
from processor.qc.thresholds import QcSpec, Tables, merged, parse_tables, thresholds_of

ENV_PREFIX = "PROCESSOR_"

#: Presets from the field's tuning table: typical rate and spatial cost per sensor type.
PROFILES: dict[str, dict[str, Any]] = {
    "air_quality": {
        "buffer_max_records": 5_000,
        "memory_high": 0.85,
        "batch_max_records": 1_000,
        "aggregate_fields": ("pm25", "pm10"),
    },
    "hydrology": {"buffer_max_records": 2_000, "memory_high": 0.80, "batch_max_records": 500},
    "temperature_array": {
        "buffer_max_records": 20_000,
        "memory_high": 0.90,
        "batch_max_records": 2_000,
    },
    "wildfire": {
        "buffer_max_records": 50_000,
        "memory_high": 0.75,
        "batch_max_records": 2_000,
        "aggregate_fields": ("pm25", "pm10"),
    },
    "dissolved_oxygen": {
        "buffer_max_records": 1_000,
        "memory_high": 0.85,
        "batch_max_records": 250,
    },
}
Profile = Literal["air_quality", "hydrology", "temperature_array", "wildfire", "dissolved_oxygen"]
MIN_MEMORY_HYSTERESIS = 0.08


def _comma_list(value: object) -> object:
    """``"pm25, pm10"`` -> ``("pm25", "pm10")``; lists (from a config file) pass through."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Typed, frozen settings; the field descriptions are the documentation."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=True
    )

    # Kafka
    bootstrap_servers: str = Field("localhost:9092", description="Kafka bootstrap servers")
    input_topic: str = Field("sensor.readings", description="Topic of raw readings")
    output_topic: str = Field("sensor.points", description="Topic of reprojected points")
    dlq_topic: str = Field("sensor.readings.dlq", description="Topic of dead letters")
    group_id: str = Field("geo-stream-processor", description="Consumer group id")
    client_id: str = Field("geo-stream-processor", description="Kafka client id")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a group without committed offsets starts"
    )
    session_timeout_ms: int = Field(45_000, ge=1_000, description="Group session timeout")
    heartbeat_interval_ms: int = Field(3_000, ge=100, description="Group heartbeat interval")
    max_poll_interval_ms: int = Field(300_000, ge=1_000, description="Max time between polls")
    fetch_max_wait_ms: int = Field(
        100,
        ge=0,
        le=60_000,
        description="Longest the broker holds a fetch waiting for data; one fetch per broker "
        "is in flight, so a resumed partition waits up to this long for its next records",
    )
    enable_idempotence: bool = Field(True, description="Idempotent producer (needs broker support)")
    aiokafka_fast_paths: bool = Field(
        True,
        description="Use aiokafka's internals where they pass their start-up check (bare "
        "fetched records, prebuilt produce batches, the metadata probe); false: public API only",
    )
    acks: Literal["all", "1", "0"] = Field("all", description="Producer acks")
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none", description="Producer compression"
    )
    linger_ms: int = Field(5, ge=0, description="Producer linger before sending a batch")
    producers: int = Field(
        2,
        ge=1,
        le=16,
        description="Producer connections; aiokafka keeps one produce request in flight per "
        "broker per producer, and a partition always goes through the same one",
    )
    max_batch_bytes: int = Field(
        1_048_576, ge=1_024, description="Producer batch size per partition (bytes)"
    )
    request_timeout_ms: int = Field(40_000, ge=1_000, description="Broker request timeout")

    # Kafka security
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (SASL_* protocols)"
    )
    sasl_username: str | None = Field(None, description="SASL username")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_cafile: Path | None = Field(None, description="CA bundle for TLS")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS")

    # Spatial
    target_crs: str = Field("EPSG:3857", description="CRS of output x/y")
    max_payload_bytes: int = Field(
        1_048_576,
        ge=64,
        description="Larger input records are dead-lettered (too_large); the dead letter of "
        "an input this size or larger keeps only its first 4096 bytes",
    )
    geofences: Path | None = Field(
        None, description="Polygon file (GeoJSON, GeoPackage, Shapefile) to tag points with"
    )
    geofence_id_field: str = Field("id", description="Column of the geofence file with the ids")
    outside_policy: Literal["dead_letter", "pass"] = Field(
        "dead_letter", description="Points outside every geofence: dead-letter or pass"
    )
    profile: Profile | None = Field(
        None, description="Sensor-type preset for buffer and memory settings (see README)"
    )

    # Windows and deduplication (docs/state.md)
    window: DurationMs | None = Field(
        None, gt=0, description="Tumbling window per sensor (60s, 5m, 1h); unset: no windows"
    )
    aggregate_fields: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)] = Field(
        (), description="Numeric reading fields each window aggregates, comma-separated"
    )
    allowed_lateness: DurationMs = Field(
        600_000, ge=0, description="How far event time may lag behind a partition's latest"
    )
    aggregates_topic: str = Field("sensor.aggregates", description="Topic of closed windows")
    dedup: bool = Field(
        False, description="A reading repeating a counted sensor_id and timestamp is a duplicate"
    )
    state_dir: Path = Field(
        Path("state"), description="Directory of the local state (windows and QC history)"
    )
    state_cleanup_delay: DurationMs = Field(
        600_000, ge=0, description="How long a partition's local state outlives its going"
    )

    # Quality control (docs/qc.md)
    qc_enabled: bool = Field(
        True, description="Flag each point with the QC tests the profile and qc configure"
    )
    qc: Annotated[Tables, NoDecode, BeforeValidator(parse_tables)] = Field(
        default_factory=dict,
        description="QC thresholds per field, over the profile's key by key: [qc.<field>] "
        'tables in the file, or JSON ({"pm25": {"spike_fail": 100}}); false unsets a key',
    )

    # Flow control
    buffer_max_records: int = Field(
        100_000, ge=10, description="Records held in memory between fetch and broker ack"
    )
    buffer_high: float = Field(0.8, gt=0, le=1, description="Pause above this buffer fill")
    buffer_low: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Resume below this buffer fill; high enough that records still wait "
        "while the first fetch after the resume is on its way",
    )
    batch_max_records: int = Field(5_000, ge=1, description="Records per spatial batch")
    stage_processes: int | None = Field(
        None,
        ge=0,
        description="Worker processes of the spatial stage; 0 runs it in a thread",
    )
    stage_delay_ms: float = Field(
        0.0, ge=0, description="Artificial delay per batch: simulates a slow stage (tests, demo)"
    )
    memory_limit_mb: int | None = Field(
        None,
        ge=16,
        description="Memory budget of the processor and its stage workers; below the floor "
        "measured at start (~170 MB) it does not start",
    )
    memory_high: float = Field(0.85, gt=0, le=1, description="Pause all above this budget share")
    memory_hysteresis: float = Field(
        0.10, lt=1, description=f"Resume at memory_high minus this (>= {MIN_MEMORY_HYSTERESIS})"
    )
    memory_sample_interval_s: float = Field(0.25, gt=0, description="Memory sampling period")
    spill_dir: Path = Field(Path("spill"), description="Directory of spill segments")
    spill_max_bytes: int = Field(
        1_073_741_824, ge=0, description="Spill size bound (0 disables spilling)"
    )
    spill_min_free_mb: int = Field(200, ge=0, description="Keep this much disk free")

    # Lifecycle and observability
    commit_interval_s: float = Field(
        0.1,
        gt=0,
        description="Shortest time between offset commits (windows on: and between writes "
        "of the window state's changelog); a commit goes out as soon as finished work moves "
        "a commit point, so a crash repeats little",
    )
    shutdown_timeout_s: float = Field(30.0, gt=0, description="Drain deadline on SIGTERM")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (0 disables)")
    http_host: str = Field(
        "0.0.0.0",  # noqa: S104 - probes and scrapers reach a pod on its own address
        description="Address the HTTP port listens on",
    )
    unreachable_after_s: float = Field(
        5.0,
        gt=0,
        description="A broker silent this long is unreachable: one warning, /readyz 503",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    log_format: Literal["json", "text"] = Field("json", description="Log line format")

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        """A profile fills in the settings it presets; explicit settings win."""
        if isinstance(data, dict) and data.get("profile") in PROFILES:
            profile = data["profile"]
            qc = merged(PROFILE_QC.get(profile, {}), parse_tables(data.get("qc", {})))
            return {**PROFILES[profile], **data, "qc": qc}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.buffer_low >= self.buffer_high:
            raise ValueError("buffer_low: must be below buffer_high")
        if self.memory_hysteresis < MIN_MEMORY_HYSTERESIS:
            raise ValueError(
                f"memory_hysteresis: must be at least {MIN_MEMORY_HYSTERESIS} to avoid flapping"
            )
        if self.memory_hysteresis >= self.memory_high:
            raise ValueError("memory_hysteresis: must be below memory_high")
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms: must be at most a third of session_timeout_ms")
        _check_security(self)
        if self.window is not None and not self.aggregate_fields:
            raise ValueError("aggregate_fields: windows need at least one field to aggregate")
        if self.window is not None and self.acks == "0":
            raise ValueError(
                "acks: windows need the broker's acknowledgements (1 or all): the window "
                "state is saved once its outputs are acknowledged"
            )
        self.qc_spec  # noqa: B018 - raises "qc.<field>.<key>: why" for a bad threshold
        if self.qc_spec is not None and self.acks == "0":
            raise ValueError(
                "acks: QC needs the broker's acknowledgements (1 or all): its state is saved "
                "once its outputs are acknowledged"
            )
        return self

    @property
    def qc_spec(self) -> QcSpec | None:
        """The QC tests to run (None: QC off, or no test configured for any field)."""
        if not self.qc_enabled:
            return None
        spec = QcSpec.of(thresholds_of(merged({}, self.qc)))
        return spec if spec.fields else None

    @property
    def has_state(self) -> bool:
        """Windows or QC on: the processor keeps state (changelog topic, local store)."""
        return self.window is not None or self.qc_spec is not None

    @property
    def state_fields(self) -> tuple[str, ...]:
        """The reading fields the state reads: the aggregated ones, then the QC'd others."""
        aggregated = self.aggregate_fields if self.window is not None else ()
        tested = self.qc_spec.fields if self.qc_spec is not None else ()
        return (*aggregated, *(name for name in tested if name not in aggregated))

    @property
    def changelog_topic(self) -> str:
        """The window state's changelog topic, one per consumer group (as Kafka Streams names
        its stores' changelogs after the application): created by the processor."""
        return f"{self.group_id}-windows-changelog"

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def memory_resume(self) -> float:
        """Budget share below which memory pauses are lifted."""
        return self.memory_high - self.memory_hysteresis


def _check_security(settings: Settings) -> None:
    """SASL credentials and TLS files that go with the security protocol, and exist."""
    sasl = settings.uses_sasl
    credentials = (settings.sasl_mechanism, settings.sasl_username, settings.sasl_password)
    if sasl and not all(credentials):
        raise ValueError(
            "sasl_mechanism: SASL protocols need sasl_mechanism, sasl_username and sasl_password"
        )
    protocol = settings.security_protocol
    if not sasl and settings.sasl_mechanism is not None:
        raise ValueError(f"sasl_mechanism: set, but security_protocol is {protocol}")
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise ValueError("ssl_keyfile: ssl_certfile and ssl_keyfile go together")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(settings, name)
        if path is not None and not settings.uses_tls:
            raise ValueError(f"{name}: set, but security_protocol is {protocol}")
        if path is not None and not path.is_file():
            raise ValueError(f"{name}: no such file: {path}")


#: What happens when a setting without a default is not set (for the help and the printout).
UNSET: dict[str, str] = {
    "sasl_mechanism": "no SASL",
    "sasl_username": "no SASL",
    "sasl_password": "no SASL",
    "ssl_cafile": "the system's CA certificates",
    "ssl_certfile": "no client certificate",
    "ssl_keyfile": "no client certificate",
    "geofences": "points are not tagged",
    "profile": "no preset",
    "stage_processes": "as many as the memory budget holds, measured at start, up to 2 with "
    "2+ CPUs, else 0",
    "memory_limit_mb": "the cgroup limit, else 1/4 of RAM",
    "window": "no windows, no aggregates, no deduplication state",
    "qc": "the profile's tables (none without a profile)",
}


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")
