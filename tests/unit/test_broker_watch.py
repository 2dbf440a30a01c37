"""processor.broker_watch: one warning per outage, one line when back, the wait for an
assignment; stepped with a fake clock, no sleeping."""

from __future__ import annotations

import logging

import pytest

from processor.core.stats import Stats
from processor.kafka.broker_watch import BrokerWatch

WHERE = {"bootstrap_servers": "kafka:9092", "group": "g"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now  # 2027-01-15T08:00:00Z at now=0


def _watch(noise: dict[str, int] | None = None) -> tuple[BrokerWatch, Stats, Clock]:
    clock = Clock()
    stats = Stats(broker_answered=clock.now)
    stats.joining = False
    watch = BrokerWatch(
        stats, 5.0, WHERE, clock=clock, wall_clock=clock.wall, noise=lambda: dict(noise or {})
    )
    return watch, stats, clock


def _step(watch: BrokerWatch, clock: Clock, seconds: float, answers: bool) -> None:
    """``seconds`` of the run loop: a check every 0.25 s, a probe answered every 1 s."""
    for tick in range(int(seconds * 4)):
        clock.now += 0.25
        if answers and tick % 4 == 3:
            watch.answered()
        watch.check()


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records]


def test_an_outage_is_one_warning_and_one_line_when_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="processor")
    watch, stats, clock = _watch(noise={"Unable connect to node with id %s: %s": 40})
    _step(watch, clock, 30, answers=True)
    assert caplog.records == []
    _step(watch, clock, 4.75, answers=False)
    assert stats.broker_reachable
    assert caplog.records == []
    _step(watch, clock, 60, answers=False)
    assert not stats.broker_reachable
    assert watch.silence() == 64.75
    [warning] = caplog.records
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith("broker unreachable: no answer for 5 s")
    assert warning.bootstrap_servers == "kafka:9092"  # type: ignore[attr-defined]
    assert warning.since == "2027-01-15T08:17:10+00:00"  # type: ignore[attr-defined]
    watch.answered()
    assert stats.broker_reachable
    back = caplog.records[-1]
    assert (back.levelname, back.getMessage()) == ("INFO", "broker reachable again after 65 s")
    assert back.client_messages_suppressed == 40  # type: ignore[attr-defined]
    _step(watch, clock, 30, answers=True)
    assert len(caplog.records) == 2


def test_a_silence_shorter_than_the_threshold_is_not_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="processor")
    watch, stats, clock = _watch()
    for _ in range(5):
        _step(watch, clock, 3.75, answers=False)
        _step(watch, clock, 1, answers=True)  # answered after 4.75 s of silence
    assert stats.broker_reachable
    assert caplog.records == []


def test_each_outage_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="processor")
    watch, _, clock = _watch()
    for _ in range(3):
        _step(watch, clock, 20, answers=False)
        _step(watch, clock, 20, answers=True)
    assert [level for level, _ in _lines(caplog)] == ["WARNING", "INFO"] * 3


def test_a_slow_join_is_logged_once_with_its_wait(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="processor")
    watch, stats, clock = _watch()
    stats.joining = True
    _step(watch, clock, 3, answers=True)
    stats.joining = False
    _step(watch, clock, 3, answers=True)
    assert caplog.records == []  # a quick join says nothing
    stats.joining = True
    _step(watch, clock, 80, answers=True)
    stats.joining = False
    _step(watch, clock, 1, answers=True)
    assert _lines(caplog) == [
        ("INFO", "waiting for a partition assignment from the group coordinator"),
        ("INFO", "partition assignment received after 80 s"),
    ]
    assert caplog.records[0].group == "g"  # type: ignore[attr-defined]
