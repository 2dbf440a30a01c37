"""Which real broker the integration suite runs against, and what that broker supports.

1. ``PROCESSOR_TEST_BOOTSTRAP_SERVERS`` set: that cluster (Kafka, Redpanda, or a broker
   started with ``processor broker``; ``PROCESSOR_TEST_IDEMPOTENCE=false`` says it lacks
   aiokafka's idempotent producer, as the embedded one does).
2. Otherwise, when a Docker engine answers: a Redpanda container through testcontainers.
3. Otherwise: the embedded Tansu broker, which needs nothing but Python.

Against Kafka or Redpanda the processor runs as in production, with the idempotent producer;
the embedded broker cannot serve aiokafka's InitProducerId, so there it is off.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from processor.tools.embedded_broker import EmbeddedBroker

log = logging.getLogger(__name__)

BOOTSTRAP_ENV = "PROCESSOR_TEST_BOOTSTRAP_SERVERS"
IDEMPOTENCE_ENV = "PROCESSOR_TEST_IDEMPOTENCE"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKER_TIMEOUT_S = 2.0  # a probe of an engine that is not there fails at once; a hung one here


class Source(enum.Enum):
    EXTERNAL = "external"
    REDPANDA = "redpanda"
    EMBEDDED = "embedded"


@dataclass(frozen=True)
class TestBroker:
    """A running broker the tests talk to."""

    __test__ = False  # not a test class, whatever pytest's name rule says

    bootstrap_servers: str
    source: Source
    supports_idempotence: bool

    @classmethod
    def embedded(cls, bootstrap_servers: str) -> TestBroker:
        """A test's own embedded broker (outages, logins): no idempotent producer."""
        return cls(bootstrap_servers, Source.EMBEDDED, supports_idempotence=False)


def choose_source(env: Mapping[str, str], docker_answers: Callable[[], bool]) -> Source:
    """The external cluster if named, else Redpanda if Docker answers (probed only then),
    else the embedded broker."""
    if env.get(BOOTSTRAP_ENV, "").strip():
        return Source.EXTERNAL
    if docker_answers():
        return Source.REDPANDA
    return Source.EMBEDDED


def external_idempotence(env: Mapping[str, str]) -> bool:
    value = env.get(IDEMPOTENCE_ENV, "true").strip().lower()
    if value not in {"true", "false"}:
        raise ValueError(f"{IDEMPOTENCE_ENV} must be true or false, not {value!r}")
    return value == "true"


def docker_answers() -> bool:
    """Whether a Docker engine answers a ping, where testcontainers would reach it. A local
    socket is tried first on its own: docker-py leaks the socket of a failed connect."""
    try:
        from testcontainers.core.docker_client import DockerClient, get_docker_host

        host = get_docker_host() or DEFAULT_DOCKER_HOST
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(DOCKER_TIMEOUT_S)
                probe.connect(host.removeprefix("unix://"))
        client = DockerClient(timeout=DOCKER_TIMEOUT_S).client
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as exc:  # no socket, no permission, no engine: all mean "no Docker"
        log.info("no Docker engine answers (%s): using the embedded broker", exc)
        return False


@contextlib.contextmanager
def suite_broker(env: Mapping[str, str], log_dir: Path) -> Iterator[TestBroker]:
    """The broker for the session, chosen by :func:`choose_source`."""
    source = choose_source(env, docker_answers)
    if source is Source.EXTERNAL:
        yield TestBroker(env[BOOTSTRAP_ENV].strip(), source, external_idempotence(env))
    elif source is Source.REDPANDA:
        from testcontainers.kafka import RedpandaContainer

        with RedpandaContainer() as redpanda:
            yield TestBroker(redpanda.get_bootstrap_server(), source, supports_idempotence=True)
    else:
        with EmbeddedBroker(log_path=log_dir / "tansu.log") as embedded:
            yield TestBroker.embedded(embedded.bootstrap_servers)
