"""Is the broker answering, is the group still joining: one line when either starts, one when over.

aiokafka retries quietly: with the broker frozen it reports nothing until a request times out
(``request_timeout_ms``, 40 s by default), and with every connection reset it logs each
attempt. So the watch asks the broker itself, once a second (:mod:`processor.probe`), and
judges the silence: ``unreachable_after_s`` without an answer is an outage, warned about
once, with what the processor waits for and since when; the first answer after it is logged
once, with how long it lasted and the client messages summarised meanwhile. A group join
that lasts as long is logged too (a member waits about half the session timeout on some
brokers, longer after a restart while its old session still counts). Readiness and the
metrics read the outcome in ``Stats``. Time is injected, so the rules are tested without
sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from processor.core.stats import Stats
from processor.kafka.probe import BrokerProbe
from processor.telemetry.logs import client_noise

log = logging.getLogger(__name__)
PROBE_INTERVAL_S = 1.0
CHECK_INTERVAL_S = 0.25


class BrokerWatch:
    def __init__(
        self,
        stats: Stats,
        unreachable_after_s: float,
        where: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        noise: Callable[[], dict[str, int]] = client_noise.flush,
    ) -> None:
        self.stats = stats
        self.unreachable_after_s = unreachable_after_s
        self._where = dict(where)  # bootstrap servers, group: named in every line
        self._clock = clock
        self._wall_clock = wall_clock
        self._noise = noise
        self._joining_since: float | None = None
        self._wait_logged = False

    def silence(self) -> float:
        """Seconds since the broker last answered."""
        return max(0.0, self._clock() - self.stats.broker_answered)

    def answered(self) -> None:
        stats = self.stats
        silent = self.silence()
        stats.broker_answered = self._clock()
        if not stats.broker_reachable:
            stats.broker_reachable = True
            suppressed = self._noise()
            log.info(
                "broker reachable again after %.0f s",
                silent,
                extra={**self._where, "unreachable_s": round(silent, 1),
                       "client_messages_suppressed": sum(suppressed.values()),
                       "suppressed": suppressed},
            )  # fmt: skip

    def check(self) -> None:
        """Judge the silence and the join; log what changed."""
        stats = self.stats
        silent = self.silence()
        if stats.broker_reachable and silent >= self.unreachable_after_s:
            stats.broker_reachable = False
            log.warning(
                "broker unreachable: no answer for %.0f s; waiting for it to answer "
                "(fetching, acknowledgements and commits wait; nothing is lost)",
                silent,
                extra={**self._where, "since": self._since(silent), **self._holding()},
            )
        self._check_join()

    def _check_join(self) -> None:
        now = self._clock()
        if not self.stats.joining:
            if self._joining_since is not None and self._wait_logged:
                waited = now - self._joining_since
                log.info("partition assignment received after %.0f s", waited,
                         extra={**self._where, "waited_s": round(waited, 1)})  # fmt: skip
            self._joining_since = None
            self._wait_logged = False
            return
        if self._joining_since is None:
            self._joining_since = now
        waited = now - self._joining_since
        if not self._wait_logged and waited >= self.unreachable_after_s:
            self._wait_logged = True
            log.info(
                "waiting for a partition assignment from the group coordinator",
                extra={**self._where, "since": self._since(waited)},
            )

    def _since(self, seconds: float) -> str:
        return datetime.fromtimestamp(self._wall_clock() - seconds, UTC).isoformat()

    def _holding(self) -> dict[str, Any]:
        return {"assigned": self.stats.assigned, "buffered": self.stats.buffered}

    async def run(self, probe: BrokerProbe) -> None:
        """Probe once a second (an unanswered probe may hang until the client's request
        timeout, so it runs on its own) and judge four times a second, until cancelled."""
        self.stats.broker_answered = self._clock()  # the processor has just talked to it
        probing = asyncio.create_task(self._probe_loop(probe), name="broker probe")
        try:
            while True:
                self.check()
                await asyncio.sleep(CHECK_INTERVAL_S)
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing

    async def _probe_loop(self, probe: BrokerProbe) -> None:
        while True:
            if await probe():
                self.answered()
            await asyncio.sleep(PROBE_INTERVAL_S)
