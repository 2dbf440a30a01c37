"""Structured logs: one JSON object per line (or plain text), with the context in ``extra``.

Payloads and credentials are never passed to the logger, so they never reach a line. The
Kafka client's per-attempt messages are summarised (:class:`RepeatSummary`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_encoder = msgspec.json.Encoder(enc_hook=str)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(line).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in _context(record).items())
        base = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        return f"{base} {context}".rstrip()


class RepeatSummary(logging.Filter):
    """Lets a few of the client's messages through per window and counts the rest.

    aiokafka logs every failed attempt: all connections reset for 15 s made 1,095 lines here
    (``Unable connect to node ...``, ``Unable to update metadata ...``, ``Failed fetch
    messages ...``), one message in many variants. Within a window at most ``limit`` messages
    pass, each of a different template (the format string, whatever its arguments); every
    other one is counted by template. The counts ride on the next line that passes
    (``suppressed``) or are taken by ``flush()`` when the broker is back, which also opens a
    new window, so the next outage shows its first messages again.
    """

    def __init__(
        self,
        logger: str = "aiokafka",
        window_s: float = 60.0,
        limit: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._logger = logger
        self._window_s = window_s
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._window_end = float("-inf")
        self._passed: set[str] = set()
        self._counts: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != self._logger and not record.name.startswith(self._logger + "."):
            return True
        template = str(record.msg)
        with self._lock:
            now = self._clock()
            if now >= self._window_end:
                self._window_end = now + self._window_s
                self._passed.clear()
            if template in self._passed or len(self._passed) >= self._limit:
                self._counts[template] += 1
                return False
            self._passed.add(template)
            if self._counts:
                record.suppressed = dict(self._counts)
                self._counts.clear()
        return True

    def flush(self) -> dict[str, int]:
        """The counts since the last line that passed, by template; starts a new window."""
        with self._lock:
            counts = dict(self._counts)
            self._counts.clear()
            self._window_end = float("-inf")
        return counts


#: The summary on the process's log handler (``setup_logging``); the broker watch flushes it.
client_noise = RepeatSummary()


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(client_noise)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
