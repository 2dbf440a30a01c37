"""processor.endpoints: liveness and readiness rules, and the tiny HTTP server on a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from processor.core.stats import Stats
from processor.telemetry.endpoints import Endpoints, Health


@dataclass
class FakeProcessor:
    """The lifecycle flags and Stats that Health reads of a Processor."""

    connected: bool = False
    running: bool = False
    stopping: bool = False
    stats: Stats = field(default_factory=lambda: Stats(last_loop=100.0))

    def paused(self) -> dict[Any, Any]:
        return {}


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_health_through_a_lifecycle() -> None:
    """Liveness holds whatever the broker and the group do; readiness says why it fails."""
    processor, clock = FakeProcessor(), Clock()
    health = Health(processor, clock=clock)  # type: ignore[arg-type]
    states = []

    def state(what: str) -> None:
        states.append((what, health.alive(), health.unready()))

    state("before start")
    processor.connected = True
    processor.running = True
    state("running, not yet in the group")
    clock.now += 80  # a join of 80 s: the fetch loop waits in getmany all along
    state("joining for 80 s")
    processor.stats.joining = False
    processor.stats.last_loop = clock.now
    state("running, assigned or idle in the group")
    processor.stats.broker_reachable = False
    clock.now += 60
    state("broker unreachable for a minute")
    processor.stats.joining = True
    state("broker unreachable while rejoining")
    processor.stats.broker_reachable = True
    state("broker back, rejoining")
    processor.stats.joining = False
    state("back in the group")
    processor.stopping = True
    state("draining")
    processor.running = False
    state("stopped")
    assert states == [
        ("before start", True, "starting"),
        ("running, not yet in the group", True, "joining"),
        ("joining for 80 s", True, "joining"),
        ("running, assigned or idle in the group", True, None),
        ("broker unreachable for a minute", True, "broker_unreachable"),
        ("broker unreachable while rejoining", True, "broker_unreachable"),
        ("broker back, rejoining", True, "joining"),
        ("back in the group", True, None),
        ("draining", True, "draining"),
        ("stopped", False, "stopped"),
    ]


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeProcessor, int]]:
    processor = FakeProcessor(stats=Stats())
    endpoints = Endpoints(Health(processor), lambda: b"processor_up 1\n")  # type: ignore[arg-type]
    port = await endpoints.start("127.0.0.1", 0)
    yield processor, port
    await endpoints.close()


async def _request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    writer.write_eof()
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    if not response:
        return 0, {}, b""
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


async def test_metrics_health_and_readiness(server: tuple[FakeProcessor, int]) -> None:
    processor, port = server
    status, headers, body = await _request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"processor_up 1\n")
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["Content-Length"] == str(len(body))
    status, headers, body = await _request(port, b"GET /healthz?verbose=1 HTTP/1.1\r\n\r\n")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    status, _, body = await _request(port, b"GET /readyz HTTP/1.1\r\n\r\n")
    assert status == 503
    assert json.loads(body)["status"] == "unavailable"
    assert json.loads(body)["reason"] == "starting"
    processor.connected = processor.running = True
    processor.stats.joining = False
    status, _, body = await _request(port, b"GET /readyz HTTP/1.0\r\n\r\n")
    assert status == 200
    assert "reason" not in json.loads(body)
    processor.stats.broker_reachable = False
    status, _, body = await _request(port, b"GET /readyz HTTP/1.1\r\n\r\n")
    assert (status, json.loads(body)["reason"]) == (503, "broker_unreachable")
    assert (await _request(port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200


@pytest.mark.parametrize(
    ("raw", "status", "allow"),
    [
        (b"GET /nope HTTP/1.1\r\n\r\n", 404, None),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "GET, HEAD"),
    ],
)
async def test_unknown_paths_and_methods(
    server: tuple[FakeProcessor, int], raw: bytes, status: int, allow: str | None
) -> None:
    got, headers, _ = await _request(server[1], raw)
    assert got == status
    assert headers.get("Allow") == allow


async def test_head_has_no_body(server: tuple[FakeProcessor, int]) -> None:
    status, headers, body = await _request(server[1], b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert status == 200
    assert int(headers["Content-Length"]) > 0
    assert body == b""


@pytest.mark.parametrize("raw", [b"garbage\r\n\r\n", b"", b"GET /metrics HTTP/1.1 extra\r\n\r\n"])
async def test_malformed_requests_are_closed_without_an_answer(
    server: tuple[FakeProcessor, int], raw: bytes
) -> None:
    assert await _request(server[1], raw) == (0, {}, b"")
