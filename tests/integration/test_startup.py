"""`processor run` start-up as real subprocesses: a failed login, a missing topic or an
unreachable broker end in one line and exit 2 within the request timeout, and SIGTERM at any
moment of start-up ends in exit 0 within the shutdown timeout; no stage worker outlives it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from processor.tools.embedded_broker import EmbeddedBroker, free_port
from tests.integration.broker import TestBroker
from tests.integration.kafka import Topics, env_for, poll_until, settings_for, topic_names

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT_MS = 10_000
SHUTDOWN_TIMEOUT_S = 5.0
#: What a Python process takes to import the processor on a loaded 2-core machine.
SLACK_S = 5.0
DEADLINE_S = 90.0
PASSWORD = "not-the-password-42"  # noqa: S105 - a wrong one, on purpose


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker that requires a SASL login (and, having no users, refuses every one)."""
    log = tmp_path_factory.mktemp("auth-broker") / "tansu.log"
    with EmbeddedBroker(log_path=log, authentication=True) as broker:
        yield broker.bootstrap_servers


@dataclass
class Run:
    """One `processor run`: its exit, its output, and every stage worker it had."""

    process: subprocess.Popen[str]
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    workers: dict[int, psutil.Process] = field(default_factory=dict)
    ended: float | None = None

    def watch(self) -> None:
        """Note the stage workers alive now (they may come and go between two looks)."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            try:
                if "processor.workers.worker" in child.cmdline():
                    self.workers.setdefault(child.pid, child)
            except psutil.Error:
                continue

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        def seen() -> bool:
            self.watch()
            return condition() or self.process.poll() is not None

        poll_until(seen, DEADLINE_S)
        if not condition():
            raise AssertionError(f"never saw {what}; output:\n{self.output()}")

    def wait(self) -> int:
        def exited() -> bool:
            self.watch()
            return self.process.poll() is not None

        poll_until(exited, DEADLINE_S)
        self.ended = time.monotonic()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running after {DEADLINE_S} s; output:\n{self.output()}")
        return int(self.process.returncode)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.strip()]

    def leftover_workers(self) -> list[int]:
        _, alive = psutil.wait_procs(list(self.workers.values()), timeout=1.0)
        for process in alive:
            process.kill()
        return [process.pid for process in alive]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(broker: TestBroker, topics: Topics, **overrides: Any) -> Run:
        settings = settings_for(
            broker,
            topics,
            tmp_path,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
            stage_processes=2,
            **overrides,
        )
        log_path = tmp_path / f"run-{len(runs)}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "processor.cli", "run"],
                env=env_for(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        runs.append(Run(process, log_path))
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
        run.leftover_workers()


def _sasl(mechanism: str) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_username": "alice",
        "sasl_password": PASSWORD,
    }


def _one_line_exit_2(run: Run) -> str:
    """The run failed as an operator expects: exit 2 within the request timeout, one line
    and no traceback, and no stage worker left behind; returns the line."""
    code = run.wait()
    seconds = (run.ended or 0) - run.started
    print(f"\nexit {code} after {seconds:.1f} s: {run.output().strip()}")
    assert code == 2, run.output()
    [line] = run.lines()
    assert line.startswith("processor: ")
    assert "Traceback" not in run.output()
    assert seconds < REQUEST_TIMEOUT_MS / 1000 + SLACK_S
    assert run.leftover_workers() == []
    return line


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_a_refused_scram_login_is_one_line_naming_the_settings(
    auth_broker: str, launch: Callable[..., Run], mechanism: str
) -> None:
    run = launch(TestBroker.embedded(auth_broker), Topics.fresh(), **_sasl(mechanism))
    line = _one_line_exit_2(run)
    assert "authentication failed" in line
    for setting in (
        "PROCESSOR_SECURITY_PROTOCOL",
        "PROCESSOR_SASL_MECHANISM",
        "PROCESSOR_SASL_USERNAME",
    ):
        assert setting in line
    assert mechanism in line
    assert "'alice'" in line
    assert PASSWORD not in run.output()
    assert len(run.workers) == 2, "the login failed after the stage workers had started"


def test_a_mechanism_the_broker_does_not_offer_is_named_as_such(
    auth_broker: str, launch: Callable[..., Run]
) -> None:
    run = launch(TestBroker.embedded(auth_broker), Topics.fresh(), **_sasl("PLAIN"))
    line = _one_line_exit_2(run)
    assert "authentication failed" in line
    assert "refused SASL mechanism PLAIN" in line
    assert "PROCESSOR_SASL_MECHANISM" in line
    assert PASSWORD not in run.output()


def test_no_login_against_a_broker_that_requires_one_names_the_protocol(
    auth_broker: str, launch: Callable[..., Run]
) -> None:
    run = launch(TestBroker.embedded(auth_broker), Topics.fresh())
    line = _one_line_exit_2(run)
    assert "may want a SASL login" in line
    assert "PROCESSOR_SECURITY_PROTOCOL (--security-protocol) PLAINTEXT" in line


def test_an_unreachable_broker_is_still_called_unreachable(launch: Callable[..., Run]) -> None:
    run = launch(TestBroker.embedded(f"127.0.0.1:{free_port()}"), Topics.fresh())
    line = _one_line_exit_2(run)
    assert "cannot reach PROCESSOR_BOOTSTRAP_SERVERS (--bootstrap-servers)" in line
    assert "connection refused" in line


async def test_a_missing_input_topic_is_named_and_not_created(
    broker: TestBroker, bootstrap: str, topics: Topics, launch: Callable[..., Run]
) -> None:
    missing = f"in-missing-{uuid.uuid4().hex[:8]}"
    run = launch(broker, topics, input_topic=missing)
    line = await asyncio.to_thread(_one_line_exit_2, run)
    assert f"invalid setting PROCESSOR_INPUT_TOPIC (--input-topic): topic {missing!r}" in line
    assert "does not exist" in line
    assert missing not in await topic_names(bootstrap)


def _stopped_cleanly(run: Run) -> float:
    """SIGTERM now; the run must exit 0 within the shutdown timeout, leaving no worker.
    Returns the seconds from the signal to the exit."""
    signalled = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    code = run.wait()
    seconds = (run.ended or 0) - signalled
    print(f"\nexit {code} {seconds:.1f} s after SIGTERM; last line: {run.lines()[-1:]}")
    assert code == 0, run.output()
    assert "Traceback" not in run.output()
    assert seconds < SHUTDOWN_TIMEOUT_S + SLACK_S
    assert run.leftover_workers() == []
    return seconds


def test_sigterm_while_the_stage_workers_start_exits_0(
    broker: TestBroker, topics: Topics, launch: Callable[..., Run]
) -> None:
    run = launch(broker, topics)
    run.wait_until(lambda: bool(run.workers), "a stage worker")
    _stopped_cleanly(run)
    assert "stopped during start-up" in run.output()


def test_sigterm_while_joining_the_group_exits_0_within_the_shutdown_timeout(
    broker: TestBroker, topics: Topics, launch: Callable[..., Run]
) -> None:
    # This broker answers a join after half the session timeout: 30 s here.
    run = launch(broker, topics, session_timeout_ms=60_000, heartbeat_interval_ms=3_000)
    run.wait_until(
        lambda: any(m in run.output() for m in ("joining the consumer group", "revoked")),
        "the group join begin",
    )
    _stopped_cleanly(run)
    assert "partitions assigned" not in run.output()


def test_sigterm_before_the_event_loop_runs_exits_0(
    broker: TestBroker, topics: Topics, launch: Callable[..., Run]
) -> None:
    """While the interpreter still imports the processor (a second or two)."""
    run = launch(broker, topics)
    run.wait_until(lambda: _imported_numpy(run.process.pid), "the imports under way")
    _stopped_cleanly(run)
    assert "stopped during start-up" in run.output()
    assert not run.workers


def _imported_numpy(pid: int) -> bool:
    """The process has begun its heavy imports (numpy's shared objects are mapped)."""
    try:
        return any("numpy" in m.path for m in psutil.Process(pid).memory_maps())
    except (psutil.Error, OSError):
        return False


async def test_the_idempotent_producer_on_a_broker_without_it_is_one_line_naming_the_setting(
    tmp_path: Path, launch: Callable[..., Run]
) -> None:
    """The embedded broker (whatever the session's cluster) refuses aiokafka's InitProducerId."""
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        topics = await Topics.fresh().create(broker.bootstrap_servers)
        run = launch(TestBroker.embedded(broker.bootstrap_servers), topics, enable_idempotence=True)
        line = await asyncio.to_thread(_one_line_exit_2, run)
    assert line.startswith(
        "processor: invalid setting PROCESSOR_ENABLE_IDEMPOTENCE (--enable-idempotence): "
    )
    assert "refused the idempotent producer (InitProducerId: UnknownError)" in line
    assert "set PROCESSOR_ENABLE_IDEMPOTENCE=false (--enable-idempotence false)" in line
