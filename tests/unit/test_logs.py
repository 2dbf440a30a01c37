"""processor.logs: the Kafka client's per-attempt messages summarised, others untouched."""

from __future__ import annotations

import logging

from processor.telemetry.logs import RepeatSummary


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(logger: str, template: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(logger, logging.ERROR, __file__, 1, template, args, None)


CONNECT = "Unable connect to node with id %s: %s"
METADATA = "Unable to update metadata from %s"
FETCH = "Failed fetch messages from %s: %s"
COORDINATOR = "Group Coordinator Request failed: %s"


def test_a_burst_of_reconnect_messages_becomes_a_few_lines_and_counts() -> None:
    clock = Clock()
    summary = RepeatSummary(window_s=60, limit=3, clock=clock)
    passed = []
    for attempt in range(500):  # what 15 s of connection resets made aiokafka log here
        clock.now = attempt * 0.03
        for logger, template in [
            ("aiokafka", CONNECT), ("aiokafka", METADATA),
            ("aiokafka.consumer.fetcher", FETCH),
            ("aiokafka.consumer.group_coordinator", COORDINATOR),
        ]:  # fmt: skip
            record = _record(logger, template, 111, f"attempt {attempt}")
            if summary.filter(record):
                passed.append(record)
    assert [r.msg for r in passed] == [CONNECT, METADATA, FETCH]
    assert summary.flush() == {CONNECT: 499, METADATA: 499, FETCH: 499, COORDINATOR: 500}
    assert summary.flush() == {}
    assert summary.filter(_record("aiokafka", CONNECT, 111, "next outage"))  # a fresh window


def test_the_counts_ride_on_the_first_line_of_the_next_window() -> None:
    clock = Clock()
    summary = RepeatSummary(window_s=60, limit=3, clock=clock)
    assert summary.filter(_record("aiokafka", CONNECT, 1, "a"))
    for _ in range(9):
        assert not summary.filter(_record("aiokafka", CONNECT, 1, "a"))
    clock.now = 61
    record = _record("aiokafka", CONNECT, 1, "a")
    assert summary.filter(record)
    assert record.suppressed == {CONNECT: 9}  # type: ignore[attr-defined]
    assert summary.flush() == {}


def test_other_loggers_are_never_summarised() -> None:
    summary = RepeatSummary(window_s=60, limit=1, clock=Clock())
    for _ in range(5):
        record = _record("processor.core.commits", "commit failed; will retry: %r", 1)
        assert summary.filter(record)
        assert summary.filter(_record("aiokafkaesque", CONNECT, 1, 2))
