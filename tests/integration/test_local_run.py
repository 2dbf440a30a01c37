"""The first hour of a new user, as real subprocesses: `processor broker`, then the
`processor sample` and `processor run` lines it prints, pasted as they are; and `processor
sample` failing and stopping the way `processor run` does."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from processor.tools.embedded_broker import EmbeddedBroker, free_port
from tests.integration.kafka import Topics, poll_until, read_all

pytestmark = pytest.mark.integration

DEADLINE_S = 90.0
COUNT = 500


class Command:
    """One `processor ...` subprocess with its stdout and stderr in files."""

    def __init__(self, argv: list[str], tmp: Path, name: str) -> None:
        self.out_path = tmp / f"{name}.out"
        self.err_path = tmp / f"{name}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "processor.cli", *argv],
                stdout=out,
                stderr=err,
                env=env,
                cwd=tmp,
                text=True,
            )

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        poll_until(lambda: condition() or self.process.poll() is not None, DEADLINE_S)
        if not condition():
            raise AssertionError(f"never saw {what}; out:\n{self.out()}\nerr:\n{self.err()}")

    def stop(self) -> None:
        """Ctrl-C, then SIGKILL for this and its children (a broker's Tansu has its own
        session, so a killed `processor broker` would leave it behind)."""
        if self.process.poll() is not None:
            return
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            child.kill()

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"still running; out:\n{self.out()}\nerr:\n{self.err()}") from None


@pytest.fixture
def command(tmp_path: Path) -> Iterator[Callable[..., Command]]:
    started: list[Command] = []

    def start(*argv: str) -> Command:
        started.append(Command(list(argv), tmp_path, f"{argv[0]}-{len(started)}"))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def _pasted(output: str, command: str) -> list[str]:
    """The arguments of the printed `processor <command> ...` line, without `processor`."""
    [line] = [
        line for line in output.splitlines() if line.strip().startswith(f"processor {command} ")
    ]
    return shlex.split(line)[1:]


def test_the_printed_lines_of_processor_broker_run_as_pasted(
    command: Callable[..., Command],
) -> None:
    broker = command("broker", "--port", "0", "--partitions", "2")
    broker.wait_for(lambda: "Ctrl-C stops the broker." in broker.out(), "the instructions")
    tansu = psutil.Process(broker.process.pid).children()
    bootstrap = broker.out().split("listening on ", 1)[1].split()[0]

    sample = command(
        *_pasted(broker.out(), "sample"), "--count", str(COUNT), "--invalid-ratio", "0"
    )
    assert sample.wait() == 0, sample.err()
    assert f"done: sent {COUNT:,} in " in sample.out()
    assert f"acknowledged {COUNT:,}," in sample.out()

    run = command(*_pasted(broker.out(), "run"), "--http-port", "0")
    points = asyncio.run(read_all(bootstrap, "sensor.points", COUNT))
    assert len(points) == COUNT
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.err()

    broker.process.send_signal(signal.SIGINT)
    assert broker.wait() == 0, broker.err()
    assert "broker stopped" in broker.out()
    assert tansu, "the broker command had no broker process"
    assert [p.pid for p in tansu if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert "Traceback" not in broker.err() + run.err() + sample.err()


def test_a_port_in_use_is_one_line(command: Callable[..., Command]) -> None:
    first = command("broker", "--port", "0")
    first.wait_for(lambda: "listening on" in first.out(), "the first broker")
    port = first.out().split("listening on 127.0.0.1:", 1)[1].split()[0]
    second = command("broker", "--port", port)
    assert second.wait() == 2
    first.process.send_signal(signal.SIGINT)
    assert first.wait() == 0
    assert second.err().splitlines() == [
        f"processor: invalid setting --port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use (--port 0 picks a free one)"
    ]


def test_sample_on_an_unreachable_broker_is_one_line_exit_2(
    command: Callable[..., Command],
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    sample = command("sample", "--bootstrap-servers", bootstrap, "--count", "10")
    assert sample.wait() == 2
    assert sample.err().splitlines() == [
        f"processor: cannot reach PROCESSOR_BOOTSTRAP_SERVERS (--bootstrap-servers) "
        f"{bootstrap!r}: {bootstrap}: connection refused"
    ]


def test_sample_on_a_missing_topic_is_one_line_exit_2(
    bootstrap: str, command: Callable[..., Command]
) -> None:
    sample = command(
        "sample",
        "--bootstrap-servers",
        bootstrap,
        "--enable-idempotence",
        "false",
        "--input-topic",
        "no-such-topic-here",
        "--count",
        "10",
    )
    assert sample.wait() == 2
    [line] = sample.err().splitlines()
    assert line.startswith(
        "processor: invalid setting PROCESSOR_INPUT_TOPIC (--input-topic): "
        "topic 'no-such-topic-here' does not exist"
    )


def test_sample_reports_progress_and_sigint_ends_in_a_summary_and_exit_0(
    bootstrap: str, topics: Topics, command: Callable[..., Command]
) -> None:
    sample = command(
        "sample",
        "--bootstrap-servers",
        bootstrap,
        "--enable-idempotence",
        "false",
        "--input-topic",
        topics.input,
        "--rate",
        "200",
    )
    sample.wait_for(lambda: "until stopped (Ctrl-C)" in sample.out(), "the first line")
    sample.wait_for(lambda: sample.out().count("\nsent ") >= 1, "a progress line")
    sample.process.send_signal(signal.SIGINT)
    assert sample.wait() == 0, sample.err()
    last = sample.out().splitlines()[-1]
    assert last.startswith("done: sent ")
    sent = int(last.split("done: sent ", 1)[1].split()[0].replace(",", ""))
    assert f"acknowledged {sent:,}," in last
    records = asyncio.run(read_all(bootstrap, topics.input, sent))
    assert len(records) == sent


def test_a_broker_that_dies_ends_the_command_with_exit_1(command: Callable[..., Command]) -> None:
    broker = command("broker", "--port", "0")
    broker.wait_for(lambda: "Ctrl-C stops the broker." in broker.out(), "the instructions")
    [tansu] = psutil.Process(broker.process.pid).children()
    tansu.kill()
    assert broker.wait() == 1
    assert broker.err().splitlines() == ["processor: the embedded broker exited by itself"]


def test_sample_on_a_broker_without_the_idempotent_producer_says_what_to_set(
    command: Callable[..., Command], tmp_path: Path
) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        topics = asyncio.run(Topics.fresh().create(broker.bootstrap_servers))
        sample = command(
            "sample",
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--input-topic",
            topics.input,
            "--count",
            "10",
        )
        assert sample.wait() == 2
    [line] = sample.err().splitlines()
    assert line.startswith(
        "processor: invalid setting PROCESSOR_ENABLE_IDEMPOTENCE (--enable-idempotence): "
    )
    assert line.endswith(
        "such as the embedded one, set PROCESSOR_ENABLE_IDEMPOTENCE=false "
        "(--enable-idempotence false)"
    )


def test_sample_on_a_broker_that_freezes_is_one_line_and_exit_1(
    command: Callable[..., Command], tmp_path: Path
) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        topics = asyncio.run(Topics.fresh().create(broker.bootstrap_servers))
        [tansu] = [
            child
            for child in psutil.Process().children()
            if broker.bootstrap_servers in " ".join(child.cmdline())
        ]
        sample = command(
            "sample",
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--enable-idempotence",
            "false",
            "--input-topic",
            topics.input,
            "--request-timeout-ms",
            "2000",
            "--rate",
            "200",
        )
        sample.wait_for(lambda: "until stopped" in sample.out(), "the first line")
        tansu.suspend()
        try:
            code = sample.wait()
        finally:
            tansu.resume()
    assert code == 1, sample.err()
    assert sample.out().splitlines()[-1].startswith("done: sent ")
    [line] = sample.err().splitlines()
    assert line.startswith("processor: stopped: ")
    assert "did not acknowledge a reading" in line or "readings not acknowledged" in line
