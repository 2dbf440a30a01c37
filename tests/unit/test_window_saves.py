"""Which acknowledged batches the window state saves (``processor.core.windowing.saveable``):
rows are packed in snapshots, a few a second, not per batch, so a batch is saved only with a
snapshot taken at or after it, and never before an older batch is ready."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processor.core.saves import WindowedBatch, saveable

# Each batch: (ready, has a snapshot).
batches = st.lists(st.tuples(st.booleans(), st.booleans()), max_size=12)


def _unsaved(flags: list[tuple[bool, bool]]) -> list[WindowedBatch]:
    return [
        WindowedBatch({} if snapped else None, None, 0, ready=ready) for ready, snapped in flags
    ]


@given(batches)
def test_saved_batches_are_ready_from_the_oldest_and_end_with_a_snapshot(
    flags: list[tuple[bool, bool]],
) -> None:
    unsaved = _unsaved(flags)
    count, snap_newest = saveable(unsaved)
    assert all(batch.ready for batch in unsaved[:count])
    if count:
        assert unsaved[count - 1].changes is not None or (snap_newest and count == len(unsaved))
    # Nothing more could be saved: the next batch is not ready, or no later ready batch (up
    # to the first one not ready) has a snapshot to cover it.
    ready = next((i for i, batch in enumerate(unsaved) if not batch.ready), len(unsaved))
    assert all(batch.changes is None for batch in unsaved[count:ready])


@given(batches)
def test_when_every_batch_is_ready_all_are_saved(flags: list[tuple[bool, bool]]) -> None:
    unsaved = _unsaved([(True, snapped) for _, snapped in flags])
    count, snap_newest = saveable(unsaved)
    assert count == len(unsaved)
    assert snap_newest == (bool(unsaved) and unsaved[-1].changes is None)


def test_a_ready_batch_waits_for_a_snapshot_after_it_while_a_later_one_is_in_flight() -> None:
    unsaved = _unsaved([(True, True), (True, False), (False, True)])
    assert saveable(unsaved) == (1, False)
    unsaved[2].ready = True
    assert saveable(unsaved) == (3, False)
