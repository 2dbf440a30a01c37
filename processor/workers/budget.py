"""What a memory budget holds: how many stage workers, and whether the processor fits at all.

A budget has to hold the processor as it is after start-up, each stage worker, and what a
burst adds on top (:func:`burst_room`). The footprints are measured when the processor
starts, on the machine it runs on and with the geofences it loaded, not assumed; only what a
burst adds is a constant, measured once and written down here. Pure arithmetic on bytes.

Two marks. The floor is the budget itself: below it even the stage in a thread would not
fit. Workers must fit under ``MEMORY_HIGH`` of it, where every partition pauses: a worker
that pushes a burst over that mark costs more than the core it adds (measured at a 256 MB
budget with a 100,000-record buffer: one worker 51-99 k records/s with 108-120 memory
pauses, the stage in a thread 98-147 k/s with none).
"""

from __future__ import annotations

from collections.abc import Callable

MIB = 1024 * 1024

#: What a burst adds beyond the fetch responses: the records taken from them, spill lines,
#: produce batches, the allocator's slack. Measured with the stage in a thread, 150,000
#: records through a 2,000-record buffer at a 160 MB budget (10 MB fetches): the processor
#: grew from 78 MB to peaks of 136-160 MB in 20 runs on the shared machine, at worst 62 MB
#: beyond two fetches; 72 MB leaves a margin of 10. (At 256 MB, 16 MB fetches: 46 MB beyond
#: them; a 100,000-record buffer at 256 MB: 55 MB.)
BURST_BYTES = 72 * MIB
#: Fetch responses held at once: the one being taken and the next, prefetched.
FETCHES_HELD = 2
#: What a stage worker adds to its start-up footprint while it works on a batch. Measured:
#: 61 -> 72 MB with the default 5,000-record batches, 7 MB more with 2,000-record ones.
WORKER_WORK_BYTES = 12 * MIB


def burst_room(fetch_bytes: int) -> int:
    """Bytes a burst takes beyond the start-up footprint, with fetches of ``fetch_bytes``."""
    return BURST_BYTES + FETCHES_HELD * fetch_bytes


def wanted_workers(cpus: float) -> int:
    """Stage workers for ``cpus``, memory permitting: two from 2 CPUs on, else a thread.

    A worker costs about twice the event loop's time per record, so one event loop feeds
    two. Two beat one even on 2 CPUs (the loop is not always busy, and a worker waiting on
    its next batch leaves the other running): +15 % measured here.
    """
    return 2 if cpus >= 2 else 0


def workers_that_fit(wanted: int, limit: int, main: int, worker: int, room: int) -> int:
    """The most workers, up to ``wanted``, such that this process (``main``), that many
    workers (``worker`` bytes after start-up, and their batches) and a burst's ``room``
    stay within ``limit`` (the budget's ``MEMORY_HIGH`` share)."""
    return max(0, min(wanted, (limit - main - room) // (worker + WORKER_WORK_BYTES)))


def floor(main: int, room_at: Callable[[int], int]) -> int:
    """The least budget, in whole MiB (as bytes), that holds ``main`` plus a burst's room.

    ``room_at(budget)`` is that room, which grows with the budget (the fetch size is derived
    from it), but by less than the budget does, so the least budget that holds it is found
    by bisection.
    """
    low, high = 0, 1
    while main + room_at(high * MIB) > high * MIB:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if main + room_at(middle * MIB) <= middle * MIB:
            high = middle
        else:
            low = middle
    return high * MIB
