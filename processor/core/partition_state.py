"""One input partition's state as the engine keeps it: its QC history, its windows, or both,
applied to a batch's readings together and saved as one set of changelog rows.

QC runs on every reading in offset order but the window state's duplicates (a redelivered
reading is no new observation: it would count as a repeat for the flat line), once the
windows know them and before they count, so that they can leave the values it flags suspect
or failed out of their statistics. Both keep a per-sensor applied offset and give a replayed record
what it got the first time, so they agree after any crash. Their rows share the changelog:
QC's keys end with :data:`~processor.qc.QC_KEY_END`, the windows' sensor keys with
:data:`~processor.state.aggregates.KEY_END` and the windows' partition row, key ``b""``, is
written last (docs/state.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from processor.core.ports import Row
from processor.qc import QC_KEY_END, Flags, PartitionQc, QcSpec
from processor.qc.endings import point_endings
from processor.state.aggregates import Aggregates
from processor.state.rows import ChangedRows
from processor.state.spec import Readings, WindowSpec
from processor.state.tables import F64, I64, Keys
from processor.state.windows import PartitionWindows

NOT_EVALUATED = 2  # QARTOD's flag of a value no test looked at


@dataclass(frozen=True, slots=True)
class StateSpec:
    """What the state keeps: windows (None: off), QC (None: off), and the reading fields of
    the readings' value columns (``Settings.state_fields``: the windows', then QC's others)."""

    windows: WindowSpec | None
    qc: QcSpec | None
    fields: tuple[str, ...]
    window_columns: list[int] = field(init=False)
    qc_columns: list[int] = field(init=False)
    #: For each window field, its column among QC's fields (-1: not tested).
    flag_columns: npt.NDArray[np.intp] = field(init=False)

    def __post_init__(self) -> None:
        windowed = self.windows.fields if self.windows is not None else ()
        tested = self.qc.fields if self.qc is not None else ()
        at = {name: i for i, name in enumerate(self.fields)}
        object.__setattr__(self, "window_columns", [at[name] for name in windowed])
        object.__setattr__(self, "qc_columns", [at[name] for name in tested])
        flag_columns = [tested.index(name) if name in tested else -1 for name in windowed]
        object.__setattr__(self, "flag_columns", np.array(flag_columns, dtype=np.intp))

    def window_flags(self, flag: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """QC's flags ``(readings, QC fields)`` as the windows' fields have them (a field QC
        does not test: not evaluated)."""
        tested = self.flag_columns >= 0
        by_field = flag[:, np.maximum(self.flag_columns, 0)]
        return np.where(tested, by_field, NOT_EVALUATED).astype(np.uint8)


class Applied(NamedTuple):
    """What a batch did: the windows' verdicts and closed aggregates, and QC's flags (None
    where that part is off)."""

    verdicts: npt.NDArray[np.uint8] | None
    aggregates: Aggregates | None
    flags: Flags | None


class PartitionState:
    """The state of one input partition (see the module docstring)."""

    def __init__(self, spec: StateSpec, windows: PartitionWindows | None, qc: PartitionQc | None):
        self.spec = spec
        self.windows = windows
        self.qc = qc

    @classmethod
    def new(cls, spec: StateSpec) -> PartitionState:
        windows = PartitionWindows(spec.windows) if spec.windows is not None else None
        return cls(spec, windows, PartitionQc(spec.qc) if spec.qc is not None else None)

    @classmethod
    def from_rows(cls, spec: StateSpec, rows: Iterable[Row]) -> PartitionState:
        """The state the latest row of each key describes; ``StateError`` if unreadable or
        saved under other settings."""
        mine: dict[bool, list[Row]] = {True: [], False: []}
        for key, value in rows:
            mine[key[-1:] == QC_KEY_END].append((key, value))
        windows = qc = None
        if spec.windows is not None:
            windows = PartitionWindows.from_rows(spec.windows, mine[False])
        if spec.qc is not None:
            qc = PartitionQc.from_rows(spec.qc, mine[True])
        return cls(spec, windows, qc)

    def apply(self, offsets: I64, sensors: Keys, event_us: I64, values: F64) -> Applied:
        """Flag, then count one batch of the partition's readings, in offset order
        (``values``: the columns of ``spec.fields``)."""
        spec, qc = self.spec, self.qc
        if self.windows is None:
            flags = None
            if qc is not None:
                flags = qc.apply(offsets, sensors, event_us, values[:, spec.qc_columns])
            return Applied(None, None, flags)
        judged: list[Flags] = []
        judge = None
        if qc is not None:

            def judge(kept: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
                """QC of the readings ``kept`` (no duplicates), as the windows' fields have
                it; the others are not evaluated."""
                got = qc.apply(
                    offsets[kept], sensors[kept], event_us[kept], values[kept][:, spec.qc_columns]
                )
                shape = (kept.size, len(spec.qc_columns))
                flags = Flags(np.full(shape, NOT_EVALUATED, np.uint8), np.zeros(shape, np.uint8))
                flags.flag[kept], flags.failed[kept] = got.flag, got.failed
                judged.append(flags)
                return spec.window_flags(flags.flag)

        verdicts, aggregates = self.windows.apply(
            Readings(offsets, sensors, event_us, values[:, spec.window_columns]), judge
        )
        return Applied(verdicts, aggregates, judged[0] if judged else None)

    def release(self, commit_offset: int) -> None:
        """The commit point reached ``commit_offset``: what replays needed before it goes."""
        if self.windows is not None:
            self.windows.release(commit_offset)
        if self.qc is not None:
            self.qc.release(commit_offset)

    def take_changes(self) -> ChangedRows:
        """The rows the batches since the last call changed: QC's, then the windows' sensor
        rows, then the windows' partition row (else QC's settings row) last."""
        parts = [part.take_changes() for part in (self.qc, self.windows) if part is not None]
        if len(parts) == 1:
            return parts[0]
        qc, windows = parts
        return ChangedRows([*qc.sensors, qc.partition, *windows.sensors], windows.partition)

    def memory_bytes(self) -> int:
        parts = (self.windows, self.qc)
        return sum(part.memory_bytes() for part in parts if part is not None)

    def sensors(self) -> int:
        if self.windows is not None:
            return self.windows.sizes().sensors
        return self.qc.sensors if self.qc is not None else 0

    def open_windows(self) -> int:
        return self.windows.sizes().open_windows if self.windows is not None else 0


class BatchFlags:
    """The QC flags of one batch's points, by point in input row order: each partition's
    filled in as it is applied; a point whose partition's state was not applied (its set-up
    ended) keeps "not evaluated" (2) for every field."""

    def __init__(self, fields: tuple[str, ...], points: int) -> None:
        self.fields = fields
        self.flag = np.full((points, len(fields)), NOT_EVALUATED, dtype=np.uint8)
        self.failed = np.zeros((points, len(fields)), dtype=np.uint8)

    def put(self, first: int, last: int, flags: Flags) -> None:
        self.flag[first:last] = flags.flag
        self.failed[first:last] = flags.failed

    def endings(self) -> list[bytes]:
        """Each point's ending, ``,"qc":{...},"qc_flag":W}``."""
        return point_endings(self.fields, self.flag, self.failed)

    def counts(self, published: npt.NDArray[np.bool_]) -> Counter[tuple[str, int]]:
        """The ``published`` points' flags, by (field, flag)."""
        counts: Counter[tuple[str, int]] = Counter()
        for column, name in enumerate(self.fields):
            codes, n = np.unique(self.flag[published, column], return_counts=True)
            counts.update(
                {
                    (name, code): count
                    for code, count in zip(codes.tolist(), n.tolist(), strict=True)
                }
            )
        return counts
