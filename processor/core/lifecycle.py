"""Start-up steps that can be stopped: a stop asked for while starting ends the start-up, and
a step that fails cancels the steps running beside it.

Cancellation is the one way to interrupt a step (a group join, a worker's spawn, a login);
each step closes what it opened when cancelled, so what remains is to cancel it and wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


async def all_or_none(*steps: Awaitable[object]) -> None:
    """Run ``steps`` at once; the first to fail cancels the others and its error is raised."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
    finally:
        await _cancel(tasks)


async def unless_stopped(step: Callable[[], Awaitable[T]], stopping: asyncio.Event) -> T | None:
    """``step()``'s result, or None when ``stopping`` is set first (``step`` is then not begun,
    or cancelled and awaited, so that its own clean-up has run when this returns)."""
    if stopping.is_set():
        return None
    task = asyncio.ensure_future(step())
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        await _cancel([task, stopped])
        raise
    await _cancel([stopped])
    if not task.done():
        await _cancel([task])
        if task.cancelled():
            return None
    return task.result()  # or its error, also one raised while it cleaned up


async def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
