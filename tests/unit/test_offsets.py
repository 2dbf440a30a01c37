"""processor.offsets.OffsetTracker: the commit point never passes an unfinished offset."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.offsets import OffsetTracker

Range = tuple[int, int]


@st.composite
def tracked_ranges(draw: st.DrawFn) -> tuple[int, list[Range], list[list[Range]]]:
    """A start offset, increasing possibly gapped ranges, and each range cut into pieces."""
    start = draw(st.integers(-1, 1_000))
    cursor = start + draw(st.integers(0, 4))
    ranges: list[Range] = []
    pieces: list[list[Range]] = []
    for _ in range(draw(st.integers(1, 8))):
        length = draw(st.integers(1, 25))
        first, end = cursor, cursor + length
        ranges.append((first, end))
        drawn = draw(st.sets(st.integers(first, end), max_size=4))
        cuts = sorted(c for c in drawn if first < c < end)
        bounds = [first, *cuts, end]
        pieces.append(list(itertools.pairwise(bounds)))
        cursor = end + draw(st.sampled_from([0, 0, 1, 3, 17]))  # 0: adjacent ranges
    return start, ranges, pieces


def check(tracker: OffsetTracker, unfinished: set[int], high: int, previous: int) -> int:
    point = tracker.commit_point()
    assert tracker.high_water == high
    assert tracker.unfinished == len(unfinished)
    if unfinished:
        lowest = min(unfinished)
        assert point <= lowest, "commit point passed an unfinished offset"
        assert point == lowest
    else:
        assert point == high
    assert point >= previous, "commit point went backwards"
    return point


@settings(max_examples=150, deadline=None)
@given(tracked_ranges(), st.data())
def test_commit_point_never_passes_an_unfinished_offset(
    scenario: tuple[int, list[Range], list[list[Range]]], data: st.DataObject
) -> None:
    start, ranges, pieces = scenario
    tracker = OffsetTracker(start)
    unfinished: set[int] = set()
    high = start
    point = check(tracker, unfinished, high, start)
    to_track = list(range(len(ranges)))
    available: list[Range] = []
    limit = ranges[-1][1] + 5
    while to_track or available:
        action = data.draw(
            st.sampled_from(
                (["track"] if to_track else [])
                + (["finish"] * 2 if available else [])
                + ["arbitrary"]
            )
        )
        if action == "track":
            i = to_track.pop(0)
            first, end = ranges[i]
            tracker.track(first, end)
            unfinished.update(range(first, end))
            high = end
            available.extend(pieces[i])
        elif action == "finish":
            first, end = available.pop(data.draw(st.integers(0, len(available) - 1)))
            tracker.finish(first, end)
            unfinished.difference_update(range(first, end))
        else:  # any range at all: overlapping finished work, untracked gaps, not yet tracked
            first = data.draw(st.integers(start - 2, limit))
            end = data.draw(st.integers(first + 1, limit + 1))
            # Offsets at or past high_water are not tracked yet: finishing them is ignored
            # (they are tracked later), so keep the request within tracked territory.
            end = min(end, high)
            if end <= first:
                continue
            tracker.finish(first, end)
            unfinished.difference_update(range(first, end))
        point = check(tracker, unfinished, high, point)
    assert unfinished == set()
    assert tracker.commit_point() == tracker.high_water == ranges[-1][1]


@settings(max_examples=100, deadline=None)
@given(tracked_ranges(), st.randoms(use_true_random=False))
def test_all_pieces_finished_in_any_order_commit_to_high_water(
    scenario: tuple[int, list[Range], list[list[Range]]], rng: random.Random
) -> None:
    start, ranges, pieces = scenario
    tracker = OffsetTracker(start)
    for first, end in ranges:
        tracker.track(first, end)
    unfinished = {o for first, end in ranges for o in range(first, end)}
    work = [piece for group in pieces for piece in group]
    rng.shuffle(work)
    point = start
    for first, end in work:
        tracker.finish(first, end)
        unfinished.difference_update(range(first, end))
        point = check(tracker, unfinished, ranges[-1][1], point)
    assert tracker.commit_point() == ranges[-1][1]


def test_fresh_tracker_commits_its_start() -> None:
    assert OffsetTracker(42).commit_point() == 42
    assert OffsetTracker(-1).commit_point() == -1
    assert OffsetTracker(42).unfinished == 0


@pytest.mark.parametrize(("first", "end"), [(5, 15), (9, 12), (0, 10), (0, 1), (-3, 2)])
def test_overlapping_track_is_refused(first: int, end: int) -> None:
    tracker = OffsetTracker(0)
    tracker.track(0, 10)
    with pytest.raises(ValueError, match="overlap"):
        tracker.track(first, end)
    assert tracker.high_water == 10
    assert tracker.unfinished == 10
    assert tracker.commit_point() == 0


def test_track_below_the_start_is_refused() -> None:
    tracker = OffsetTracker(100)
    with pytest.raises(ValueError, match="overlap"):
        tracker.track(50, 60)
    assert tracker.commit_point() == 100


def test_track_below_finished_offsets_is_refused() -> None:
    tracker = OffsetTracker(0)
    tracker.track(0, 10)
    tracker.finish(0, 10)
    with pytest.raises(ValueError, match="overlap"):
        tracker.track(9, 11)
    assert tracker.commit_point() == 10


@pytest.mark.parametrize(("first", "end"), [(5, 5), (0, 0), (6, 5)])
def test_empty_range_is_refused(first: int, end: int) -> None:
    tracker = OffsetTracker(0)
    with pytest.raises(ValueError, match="empty"):
        tracker.track(first, end)
    assert tracker.high_water == 0
    assert tracker.commit_point() == 0


def test_gap_between_ranges_is_skipped_once_the_first_finishes() -> None:
    tracker = OffsetTracker(0)
    tracker.track(0, 3)
    tracker.track(10, 12)
    tracker.finish(0, 3)
    assert tracker.commit_point() == 10
    tracker.finish(10, 12)
    assert tracker.commit_point() == 12


def test_out_of_order_finish_holds_the_commit_point() -> None:
    tracker = OffsetTracker(0)
    tracker.track(0, 100)
    tracker.finish(50, 100)
    assert tracker.commit_point() == 0
    tracker.finish(10, 50)
    assert tracker.commit_point() == 0
    tracker.finish(0, 10)
    assert tracker.commit_point() == 100


def test_finishing_the_middle_splits_the_range() -> None:
    tracker = OffsetTracker(0)
    tracker.track(0, 10)
    tracker.finish(3, 6)
    assert tracker.unfinished == 7
    tracker.finish(0, 3)
    assert tracker.commit_point() == 6


def test_finishing_untracked_offsets_is_ignored() -> None:
    tracker = OffsetTracker(0)
    tracker.track(5, 10)
    tracker.finish(0, 5)
    tracker.finish(10, 20)
    assert tracker.commit_point() == 5
    assert tracker.unfinished == 5
    tracker.track(10, 20)
    assert tracker.unfinished == 15


def test_adjacent_ranges_merge() -> None:
    tracker = OffsetTracker(0)
    tracker.track(0, 5)
    tracker.track(5, 10)
    tracker.finish(0, 5)
    assert tracker.commit_point() == 5
    tracker.finish(5, 10)
    assert tracker.commit_point() == 10
