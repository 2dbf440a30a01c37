"""processor.budget: how many stage workers a budget holds, and the floor below which the
processor does not start. Pure arithmetic: the footprints are given, as measured."""

from __future__ import annotations

from functools import partial

import pytest

from processor.config import Settings
from processor.workers.budget import (
    BURST_BYTES,
    MIB,
    WORKER_WORK_BYTES,
    burst_room,
    floor,
    wanted_workers,
    workers_that_fit,
)
from processor.workers.runner import room_at

MAIN = 79 * MIB  # `processor run` after start-up, measured on the development machine
WORKER = 61 * MIB  # a stage worker after its warm-up, same machine
HIGH = Settings().memory_high  # workers fit under this share of the budget


def test_a_burst_takes_two_fetches_and_its_working_memory() -> None:
    assert burst_room(10 * MIB) == BURST_BYTES + 20 * MIB


@pytest.mark.parametrize(("cpus", "wanted"), [(1.0, 0), (1.5, 0), (2.0, 2), (8.0, 2)])
def test_two_workers_are_wanted_from_two_cpus_on(cpus: float, wanted: int) -> None:
    assert wanted_workers(cpus) == wanted


@pytest.mark.parametrize(
    ("budget_mb", "workers"),
    [(180, 0), (256, 0), (300, 0), (310, 1), (400, 1), (412, 2), (512, 2), (4096, 2)],
)
def test_workers_follow_from_what_the_budget_holds(budget_mb: int, workers: int) -> None:
    budget = budget_mb * MIB
    room = room_at(Settings(), budget)
    assert workers_that_fit(2, int(budget * HIGH), MAIN, WORKER, room) == workers


def test_the_workers_that_fit_leave_a_burst_its_room_and_one_more_would_not() -> None:
    for budget_mb in range(100, 1024, 7):
        limit = int(budget_mb * MIB * HIGH)
        room = room_at(Settings(), budget_mb * MIB)
        fit = workers_that_fit(8, limit, MAIN, WORKER, room)
        working = WORKER + WORKER_WORK_BYTES
        assert MAIN + fit * working + room <= limit or fit == 0
        assert fit == 8 or MAIN + (fit + 1) * working + room > limit


def test_never_more_than_wanted_nor_fewer_than_none() -> None:
    assert workers_that_fit(0, 64 * 1024 * MIB, MAIN, WORKER, 0) == 0
    assert workers_that_fit(1, 64 * 1024 * MIB, MAIN, WORKER, 0) == 1
    assert workers_that_fit(2, 16 * MIB, MAIN, WORKER, 0) == 0


def test_a_bigger_fetch_needs_more_room_so_fewer_workers() -> None:
    limit = 320 * MIB
    assert workers_that_fit(2, limit, MAIN, WORKER, burst_room(4 * MIB)) == 2
    assert workers_that_fit(2, limit, MAIN, WORKER, burst_room(20 * MIB)) == 1


def test_the_floor_is_the_least_whole_mib_that_holds_the_process_and_a_burst() -> None:
    room = partial(room_at, Settings())
    least = floor(MAIN, room)
    assert least % MIB == 0
    assert MAIN + room(least) <= least
    assert MAIN + room(least - MIB) > least - MIB
    assert 160 * MIB < least < 180 * MIB  # 79 MB + 72 MB + two fetches of 1/16 of it


@pytest.mark.parametrize("main_mb", [1, 20, 75, 300, 2000])
def test_the_floor_rises_with_the_footprint(main_mb: int) -> None:
    room = partial(room_at, Settings())
    least = floor(main_mb * MIB, room)
    assert main_mb * MIB + room(least) <= least
    assert main_mb * MIB + room(least - MIB) > least - MIB
    assert floor((main_mb + 10) * MIB, room) > least
