"""The demo's summary in words, told from samples (pure)."""

from __future__ import annotations

from processor.demo.live import Sample
from processor.demo.story import paused_seconds, story


def _sample(elapsed: float, paused: dict[int, tuple[str, ...]], lag: dict[int, int]) -> Sample:
    return Sample(
        elapsed=elapsed,
        phase="calm",
        produced=0,
        consumed=0,
        finished=0,
        dead_lettered={},
        buffered=0,
        buffer_max=100,
        paused=paused,
        pauses={},
        spill_records=0,
        spill_bytes=0,
        memory_used=0,
        memory_budget=1,
        lag=lag,
        pm25={},
    )


HISTORY = [
    _sample(0.0, {}, {0: 0, 1: 0, 2: 0}),
    _sample(1.0, {0: ("partition_share",)}, {0: 500, 1: 10, 2: 10}),
    _sample(2.5, {0: ("partition_share", "buffer"), 1: ("buffer",), 2: ("buffer",)},
            {0: 900, 1: 80, 2: 20}),
    _sample(3.0, {0: ("partition_share",)}, {0: 400, 1: 5, 2: 5}),
    _sample(5.0, {}, {0: 60, 1: 5, 2: 5}),
    _sample(6.0, {}, {0: 0, 1: 0, 2: 0}),
]  # fmt: skip


def test_paused_seconds_add_up_the_intervals_a_reason_held() -> None:
    assert paused_seconds(HISTORY, "partition_share") == {0: 4.0}
    assert paused_seconds(HISTORY, "buffer") == {0: 0.5, 1: 0.5, 2: 0.5}


def test_the_story_names_who_was_held_what_kafka_held_and_when_it_drained() -> None:
    lines = story(HISTORY, hot=(0,))
    assert lines == [
        "held back on their own (partition_share): partition 0 for 4.0 s",
        "partitions 1, 2 were never held back for their share: the burst did not hold them up",
        "Kafka held up to 1,000 readings at once (t=2 s), 90% of them on the burst's partitions 0",
        "every partition paused together (buffer full) for 0.5 s in all, when the burst "
        "outran the stage",
        "the backlog was drained at t=5 s, 2 s after its peak",
    ]


def test_one_partition_never_held_back_is_told_in_the_singular() -> None:
    lines = story(HISTORY, hot=(0, 1))
    assert "partition 2 was never held back for its share: the burst did not hold it up" in lines


def test_a_backlog_still_there_at_the_end_is_said_to_be() -> None:
    lines = story(HISTORY[:3], hot=(0,))
    assert lines[-1] == "the backlog was not drained when the run ended"
