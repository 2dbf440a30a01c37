"""``/metrics``, ``/healthz`` and ``/readyz`` over a tiny asyncio HTTP/1.1 server.

Three fixed GET routes for probes and scrapers do not need a web framework: a request is one
line plus headers, the answer is one small body and the connection is closed. Everything runs
on the processor's event loop, so the metric callbacks read ``Stats`` without locks.

- ``/healthz`` (liveness): 200 whenever this event loop answers, while starting, running or
  draining, whatever the broker and the group are doing: restarting the pod would only start
  the same wait again. 503 once the processor has stopped.
- ``/readyz``: 200 once connected, placed in the group (with partitions, or idle because the
  group has more members than partitions) and the broker answers; 503 with a ``reason``
  otherwise: ``starting``, ``joining``, ``broker_unreachable``, ``draining``, ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from processor.core.pipeline import Processor

log = logging.getLogger(__name__)
_READ_TIMEOUT_S = 5.0
_MAX_HEADER_LINES = 100
_JSON = "application/json"
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass(slots=True)
class Health:
    """Liveness and readiness of one processor, from its lifecycle flags and ``Stats``."""

    processor: Processor
    clock: Callable[[], float] = field(default=time.monotonic)

    def alive(self) -> bool:
        return self.processor.running or not self.processor.stopping

    def unready(self) -> str | None:
        """Why the processor is not ready, or None when it is."""
        processor, stats = self.processor, self.processor.stats
        if processor.stopping:
            return "draining" if processor.running else "stopped"
        if not (processor.connected and processor.running):
            return "starting"
        if not stats.broker_reachable:
            return "broker_unreachable"
        if stats.joining:
            return "joining"
        return None

    def detail(self) -> dict[str, Any]:
        stats = self.processor.stats
        now = self.clock()
        return {
            "loop_age_s": round(max(0.0, now - stats.last_loop), 3),
            "broker_silence_s": round(max(0.0, now - stats.broker_answered), 3),
            "assigned": stats.assigned,
            "paused": len(self.processor.paused()),
            "buffered": stats.buffered,
        }


class Endpoints:
    """The HTTP listener; ``metrics`` renders the Prometheus text on each scrape."""

    def __init__(self, health: Health, metrics: Callable[[], bytes]) -> None:
        self._health = health
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("http listening", extra={"host": host, "port": bound})
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def route(self, method: str, target: str) -> tuple[int, str, bytes, dict[str, str]]:
        """(status, content type, body, extra headers) of a request."""
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/healthz", "/readyz"):
            return 404, "text/plain", b"not found\n", {}
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n", {"Allow": "GET, HEAD"}
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics(), {}
        if path == "/healthz":
            reason = None if self._health.alive() else "stopped"
        else:
            reason = self._health.unready()
        status = {"status": "ok"} if reason is None else {"status": "unavailable", "reason": reason}
        body = json.dumps({**status, **self._health.detail()}).encode() + b"\n"
        return (200 if reason is None else 503), _JSON, body, {}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT_S)
            for _ in range(_MAX_HEADER_LINES):
                line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT_S)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request.decode("latin-1").split()
            if len(parts) != 3:
                return
            method, target, _ = parts
            status, content_type, body, extra = self.route(method, target)
            head = [
                f"HTTP/1.1 {status} {_REASONS[status]}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}",
                "Connection: close",
                *(f"{name}: {value}" for name, value in extra.items()),
            ]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass  # a slow, vanished or oversized client: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
