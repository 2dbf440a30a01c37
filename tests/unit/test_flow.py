"""processor.flow.FlowController: pause/resume decisions with hysteresis on every signal."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.flow import FlowController, FlowLimits, FlowSnapshot, PauseReason

B = PauseReason.BUFFER
M = PauseReason.MEMORY
SHARE = PauseReason.PARTITION_SHARE
REPLAY = PauseReason.SPILL_REPLAY
FULL = PauseReason.SPILL_FULL

LIMITS = FlowLimits(buffer_max=1_000, buffer_low=0.3)  # high 0.8, memory 0.85 / 0.75
PARTS = frozenset({"a", "b", "c", "d"})


def snap(
    buffered: int = 0,
    *,
    held: Mapping[str, int] | None = None,
    used: int = 0,
    budget: int = 1_000,
    spilled: frozenset[str] = frozenset(),
    assigned: frozenset[str] = PARTS,
) -> FlowSnapshot[str]:
    return FlowSnapshot(assigned, buffered, dict(held or {}), used, budget, spilled)


def controller(limits: FlowLimits = LIMITS) -> FlowController[str]:
    return FlowController(limits)


def reasons_of(decisions: Mapping[str, frozenset[PauseReason]], reason: PauseReason) -> set[str]:
    return {tp for tp, reasons in decisions.items() if reason in reasons}


# buffer watermarks --------------------------------------------------------------------


def test_nothing_paused_when_idle() -> None:
    decisions = controller().decide(snap())
    assert decisions == dict.fromkeys(PARTS, frozenset())


def test_buffer_pause_at_high_and_resume_only_at_low() -> None:
    flow = controller()
    assert reasons_of(flow.decide(snap(799)), B) == set()
    assert reasons_of(flow.decide(snap(800)), B) == PARTS  # >= high
    assert reasons_of(flow.decide(snap(500)), B) == PARTS  # between: still paused
    assert reasons_of(flow.decide(snap(301)), B) == PARTS
    assert reasons_of(flow.decide(snap(300)), B) == set()  # <= low
    assert reasons_of(flow.decide(snap(500)), B) == set()  # between: still flowing
    assert reasons_of(flow.decide(snap(799)), B) == set()
    assert reasons_of(flow.decide(snap(1_000)), B) == PARTS


@settings(max_examples=150, deadline=None)
@given(
    st.integers(10, 2_000),
    st.floats(0.05, 1.0),
    st.floats(0.0, 0.95),
    st.data(),
)
def test_noisy_buffer_signal_never_flaps(
    buffer_max: int, high: float, low_share: float, data: st.DataObject
) -> None:
    low = high * low_share
    limits = FlowLimits(buffer_max=buffer_max, buffer_high=high, buffer_low=low)
    flow = controller(limits)
    level = data.draw(st.integers(0, buffer_max))
    paused = False
    seen_high_since_pause = False
    seen_low_since_resume = True
    on_off = off_on = 0
    for _ in range(data.draw(st.integers(1, 60))):
        # A random walk with noise and the occasional jump.
        level += data.draw(st.integers(-buffer_max // 5, buffer_max // 5))
        if data.draw(st.booleans()) and data.draw(st.booleans()):
            level = data.draw(st.integers(0, buffer_max))
        level = min(max(level, 0), buffer_max)
        fill = level / buffer_max
        now = B in flow.decide(snap(level))["a"]
        if now and not paused:
            off_on += 1
            assert fill >= high, f"pause started at fill {fill} below high {high}"
            assert seen_low_since_resume
            seen_high_since_pause = True
            seen_low_since_resume = False
        elif paused and not now:
            on_off += 1
            assert fill <= low, f"pause lifted at fill {fill} above low {low}"
            assert seen_high_since_pause, "a resume without a preceding >= high"
            seen_low_since_resume = True
            seen_high_since_pause = False
        if fill >= high:
            assert now, "fill at or above high must pause"
        if fill <= low:
            assert not now, "fill at or below low must not pause"
        if now and fill > low:
            assert paused or fill >= high
        paused = now
    assert on_off <= off_on <= on_off + 1


# memory -------------------------------------------------------------------------------


def test_memory_pause_and_resume_with_hysteresis() -> None:
    flow = controller()
    assert reasons_of(flow.decide(snap(10, used=849)), M) == set()
    assert reasons_of(flow.decide(snap(10, used=850)), M) == PARTS  # >= memory_high
    assert reasons_of(flow.decide(snap(10, used=800)), M) == PARTS
    assert reasons_of(flow.decide(snap(10, used=751)), M) == PARTS
    assert reasons_of(flow.decide(snap(10, used=750)), M) == set()  # <= memory_resume
    assert reasons_of(flow.decide(snap(10, used=840)), M) == set()
    assert reasons_of(flow.decide(snap(10, used=2_000)), M) == PARTS


def test_memory_with_custom_limits() -> None:
    flow = controller(FlowLimits(buffer_max=100, memory_high=0.5, memory_resume=0.4))
    assert reasons_of(flow.decide(snap(10, used=500)), M) == PARTS
    assert reasons_of(flow.decide(snap(10, used=450)), M) == PARTS
    assert reasons_of(flow.decide(snap(10, used=400)), M) == set()


def test_unknown_memory_budget_never_pauses() -> None:
    flow = controller()
    assert reasons_of(flow.decide(snap(10, used=10**12, budget=0)), M) == set()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1_200), min_size=1, max_size=60))
def test_noisy_memory_signal_never_flaps(samples: list[int]) -> None:
    flow = controller()
    paused = False
    for used in samples:
        now = M in flow.decide(snap(10, used=used))["a"]
        share = used / 1_000
        if now and not paused:
            assert share >= LIMITS.memory_high
        if paused and not now:
            assert share <= LIMITS.memory_resume
        paused = now


# per-partition share --------------------------------------------------------------------


def test_hot_partition_is_paused_alone() -> None:
    flow = controller()
    share = flow.share(len(PARTS))
    assert share == 250
    decisions = flow.decide(snap(320, held={"a": 260, "b": 30, "c": 20, "d": 10}))
    assert decisions["a"] == frozenset({SHARE})
    assert decisions["b"] == decisions["c"] == decisions["d"] == frozenset()


def test_a_lone_backlog_may_use_the_whole_buffer() -> None:
    """Work-conserving: the share is split among partitions that hold records now."""
    flow = controller()
    assert flow.decide(snap(700, held={"a": 700}))["a"] == frozenset()
    decisions = flow.decide(snap(520, held={"a": 500, "b": 20}))  # b has work: a yields
    assert decisions["a"] == frozenset({SHARE})
    assert decisions["b"] == frozenset()


def test_partition_share_has_hysteresis() -> None:
    flow = controller()
    resume_at = int(250 * LIMITS.share_resume)
    others = {"b": 1, "c": 1, "d": 1}  # all four active: share 250

    def held(a: int) -> FlowSnapshot[str]:
        return snap(a + 3, held={"a": a, **others})

    assert SHARE in flow.decide(held(260))["a"]
    assert SHARE in flow.decide(held(200))["a"]
    assert SHARE in flow.decide(held(resume_at + 1))["a"]
    assert SHARE not in flow.decide(held(resume_at))["a"]
    assert SHARE not in flow.decide(held(249))["a"]


def test_share_follows_active_partitions() -> None:
    flow = controller()
    assert flow.share(1) == 1_000
    assert flow.share(0) == 1_000
    one = frozenset({"a"})
    assert flow.decide(snap(600, held={"a": 600}, assigned=one))["a"] == frozenset()


# spill ------------------------------------------------------------------------------------


def test_spilled_partitions_wait_for_replay() -> None:
    flow = controller()
    decisions = flow.decide(snap(10, spilled=frozenset({"b"})))
    assert decisions["b"] == frozenset({REPLAY})
    assert reasons_of(decisions, REPLAY) == {"b"}
    assert flow.decide(snap(10))["b"] == frozenset()


def test_memory_room() -> None:
    flow = controller()
    flow.decide(snap(400))
    assert flow.memory_room("a", snap(400)) == 600
    assert flow.memory_room("a", snap(1_000)) == 0
    assert flow.memory_room("a", snap(1_200)) == 0
    spilled = snap(400, spilled=frozenset({"a"}))
    assert flow.memory_room("a", spilled) == 0
    assert flow.memory_room("b", spilled) == 600


def test_memory_room_is_zero_under_memory_pressure_while_anything_is_held() -> None:
    flow = controller()
    flow.decide(snap(10, used=900))
    assert flow.memory_room("a", snap(10, used=900)) == 0
    flow.decide(snap(10, used=800))  # between resume and high: still under pressure
    assert flow.memory_room("a", snap(10, used=800)) == 0
    flow.decide(snap(10, used=700))
    assert flow.memory_room("a", snap(10, used=700)) == 990


def test_memory_pressure_with_an_empty_buffer_lets_one_batch_trickle_in() -> None:
    """Pausing frees nothing when nothing is held: progress continues a batch at a time."""
    flow = controller(FlowLimits(buffer_max=1_000, trickle=200))
    decisions = flow.decide(snap(0, used=900))
    assert reasons_of(decisions, M) == set()
    assert flow.memory_room("a", snap(0, used=900)) == 200
    assert reasons_of(flow.decide(snap(200, used=900)), M) == PARTS
    assert flow.memory_room("a", snap(200, used=900)) == 0


def test_a_trickle_larger_than_the_buffer_is_cut_to_the_bound() -> None:
    flow = controller(FlowLimits(buffer_max=1_000, trickle=5_000))
    flow.decide(snap(0, used=900))
    assert flow.memory_room("a", snap(0, used=900)) == 1_000


def test_replay_room() -> None:
    flow = controller()
    flow.decide(snap(100))
    assert flow.replay_room(snap(100)) == 700  # up to the high watermark
    assert flow.replay_room(snap(800)) == 0


def test_replay_room_is_zero_under_pressure() -> None:
    flow = controller()
    flow.decide(snap(10, used=900))
    assert flow.replay_room(snap(10, used=900)) == 0
    assert flow.replay_room(snap(0, used=900)) == LIMITS.trickle  # nothing held: trickle
    flow = controller()
    flow.decide(snap(850))
    flow.decide(snap(500))  # still buffer-paused
    assert flow.replay_room(snap(500)) == 0
    flow.decide(snap(300))
    assert flow.replay_room(snap(300)) == 500


def test_handed_back_keeps_spill_full_until_low_watermark() -> None:
    flow = controller()
    flow.decide(snap(500))
    flow.handed_back("c")
    assert flow.decide(snap(500))["c"] == frozenset({FULL})
    assert flow.decide(snap(500))["a"] == frozenset()
    assert FULL in flow.decide(snap(700))["c"]
    assert FULL in flow.decide(snap(301))["c"]
    assert FULL not in flow.decide(snap(300))["c"]
    assert FULL not in flow.decide(snap(500))["c"]


def test_forget_drops_state() -> None:
    flow = controller()
    busy = {"b": 1, "c": 1, "d": 1}  # all active: share 250
    flow.decide(snap(263, held={"a": 260, **busy}))
    flow.handed_back("a")
    assert flow.decide(snap(400, held={"a": 200, **busy}))["a"] == frozenset({SHARE, FULL})
    flow.forget(["a"])
    assert flow.decide(snap(400, held={"a": 200, **busy}))["a"] == frozenset()


def test_revoked_partitions_drop_out_of_decisions() -> None:
    flow = controller()
    flow.decide(snap(260, held={"a": 260}))
    flow.handed_back("a")
    others = frozenset({"b", "c"})
    assert set(flow.decide(snap(400, assigned=others))) == others
    assert flow.decide(snap(400, held={"a": 200}))["a"] == frozenset()


@pytest.mark.parametrize("reason", list(PauseReason))
def test_reason_values_are_stable(reason: PauseReason) -> None:
    assert reason.value in {"buffer", "partition_share", "memory", "spill_replay", "spill_full"}


def test_all_reasons_at_once() -> None:
    flow = controller()
    held = {"a": 897, "b": 1, "c": 1, "d": 1}
    flow.decide(snap(900, held=held, used=900))
    flow.handed_back("a")
    decisions = flow.decide(snap(900, held=held, used=900, spilled=frozenset({"a"})))
    assert decisions["a"] == frozenset(PauseReason)
    assert decisions["b"] == frozenset({B, M})


# sharing the memory room among the partitions of one fetch ---------------------------------


def test_the_first_partition_of_a_fetch_does_not_take_all_the_room() -> None:
    flow = controller()  # buffer 1,000
    split = flow.memory_split({"a": 6_000, "b": 100, "c": 1_000}, snap(400))  # room 600
    assert split == {"a": 250, "b": 100, "c": 250}  # what b does not need goes to a and c


def test_a_fetch_that_fits_is_taken_whole() -> None:
    split = controller().memory_split({"a": 300, "b": 200, "c": 0}, snap(0))
    assert split == {"a": 300, "b": 200, "c": 0}


def test_a_partition_with_records_on_disk_gets_no_room_and_leaves_it_to_the_others() -> None:
    split = controller().memory_split({"a": 900, "b": 900}, snap(0, spilled=frozenset({"a"})))
    assert split == {"a": 0, "b": 900}


@pytest.mark.parametrize("room", [0, 1, 7, 999])
def test_the_split_never_exceeds_the_room(room: int) -> None:
    counts = {"a": 5_000, "b": 3, "c": 700, "d": 1}
    split = controller().memory_split(counts, snap(1_000 - room))
    assert sum(split.values()) == min(room, sum(counts.values()))
    assert all(0 <= split[tp] <= counts[tp] for tp in counts)
