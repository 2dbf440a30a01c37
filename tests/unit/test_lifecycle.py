"""processor.lifecycle: start-up steps that a stop ends and that fail together."""

from __future__ import annotations

import asyncio

import pytest

from processor.core.lifecycle import all_or_none, unless_stopped


class Step:
    """A step that waits until released (or forever), noting its clean-up."""

    def __init__(self, result: str = "done", error: Exception | None = None) -> None:
        self.result = result
        self.error = error
        self.began = asyncio.Event()
        self.release = asyncio.Event()
        self.cleaned_up = False

    async def __call__(self) -> str:
        self.began.set()
        try:
            await self.release.wait()
        finally:
            self.cleaned_up = True
        if self.error is not None:
            raise self.error
        return self.result


async def test_a_step_left_alone_gives_its_result() -> None:
    step = Step()
    step.release.set()
    assert await unless_stopped(step, asyncio.Event()) == "done"


async def test_a_stop_during_the_step_cancels_it_and_waits_for_its_clean_up() -> None:
    step, stopping = Step(), asyncio.Event()
    running = asyncio.create_task(unless_stopped(step, stopping))
    await step.began.wait()
    stopping.set()
    assert await running is None
    assert step.cleaned_up


async def test_a_stop_asked_before_the_step_means_it_never_begins() -> None:
    step, stopping = Step(), asyncio.Event()
    stopping.set()
    assert await unless_stopped(step, stopping) is None
    assert not step.began.is_set()


async def test_a_failing_step_raises_its_own_error() -> None:
    step = Step(error=ValueError("bad"))
    step.release.set()
    with pytest.raises(ValueError, match="bad"):
        await unless_stopped(step, asyncio.Event())


async def test_the_first_failure_cancels_the_other_steps() -> None:
    failing, waiting = Step(error=ValueError("first")), Step()
    failing.release.set()
    with pytest.raises(ValueError, match="first"):
        await all_or_none(failing(), waiting())
    assert waiting.cleaned_up


async def test_all_steps_done_is_success() -> None:
    steps = [Step(), Step()]
    for step in steps:
        step.release.set()
    await all_or_none(*(step() for step in steps))
    assert all(step.cleaned_up for step in steps)
