"""What the window state is told: its settings (:class:`WindowSpec`), a batch's readings of one
partition (:class:`Readings`), and what each reading did (:class:`Verdict`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from processor.state import hourly
from processor.state.tables import F64, I64, U8, Keys


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """The settings state depends on: restoring under other settings is refused. Lengths are
    configured in milliseconds; the state counts in microseconds, as event times are.
    ``flagged``: the fields quality control tests, whose aggregates say how many values it
    left out (not saved with the state: QC's own settings are)."""

    length_ms: int
    lateness_ms: int
    fields: tuple[str, ...]
    dedup: bool
    flagged: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A lateness >= 0 is what lets a reading never close its own window.
        if self.length_ms <= 0 or self.lateness_ms < 0:
            raise ValueError(f"window length must be > 0 and lateness >= 0, got {self}")

    @property
    def length_us(self) -> int:
        return self.length_ms * 1000

    @property
    def lateness_us(self) -> int:
        return self.lateness_ms * 1000

    @property
    def pollutants(self) -> tuple[int, ...]:
        """The columns of ``fields`` whose hourly aggregates carry a NowCast."""
        return hourly.pollutant_columns(self.length_ms, self.fields)


class Verdict(IntEnum):
    """What a reading did to the state (``apply``'s verdicts are ``uint8`` of these)."""

    COUNTED = 0
    LATE = 1  # its window had closed: not counted, its point is still published
    DUPLICATE = 2  # dedup: its (sensor, timestamp) was counted in an open window


@dataclass(slots=True)
class Readings:
    """One partition's valid readings of one batch, in offset order, as columns.

    ``event_us``: event times in UTC epoch microseconds (the dedup key's instant);
    ``sensors`` are :func:`processor.state.aggregates.sensor_keys` (fixed-width UTF-8 bytes,
    searched in C; see there); ``values`` is ``(n, len(spec.fields))``, NaN where the field
    was missing or not a finite number; ``flags``, with QC, the values' QARTOD flags (a value
    flagged 3, suspect, or 4, failed, is not counted, but counted as such).
    """

    offsets: I64
    sensors: Keys
    event_us: I64
    values: F64
    flags: U8 | None = None

    def check(self, n_fields: int) -> None:
        """Refuse a batch that breaks the contract: it would corrupt the state silently."""
        n = self.offsets.size
        if (
            self.sensors.size != n
            or self.event_us.size != n
            or self.values.shape != (n, n_fields)
            or (self.flags is not None and self.flags.shape != (n, n_fields))
        ):
            raise ValueError("readings' columns differ in length or in number of fields")
        if self.sensors.dtype.kind != "S":
            raise ValueError(f"sensors must be sensor_keys(), got dtype {self.sensors.dtype}")
        if n and (self.offsets[0] < 0 or (np.diff(self.offsets) <= 0).any()):
            raise ValueError("readings' offsets must be >= 0 and increasing")
