"""Plain counters and gauges the pipeline updates; telemetry and the demo only read them.

Keeping them free of OpenTelemetry lets the core run (and be tested) without it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from processor.core.memory import MIB


@dataclass(slots=True)
class Stats:
    consumed: int = 0
    published: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    spilled: int = 0
    replayed: int = 0
    handed_back: int = 0
    pauses: Counter[str] = field(default_factory=Counter)
    resumes: Counter[str] = field(default_factory=Counter)
    paused_by_reason: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    batches: int = 0
    batch_seconds_total: float = 0.0
    buffered: int = 0
    buffer_max: int = 0
    peak_buffered: int = 0
    spill_records: int = 0
    spill_bytes: int = 0
    memory_used: int = 0
    memory_budget: int = 0
    peak_memory: int = 0
    assigned: int = 0
    assignments: int = 0  # group assignments received (an empty one included): joined
    joining: bool = True  # no assignment yet, or a rebalance under way: waiting for one
    broker_reachable: bool = True  # see processor.kafka.broker_watch
    broker_answered: float = field(default_factory=time.monotonic)  # its last answer
    committed_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # one past taken
    last_loop: float = field(default_factory=time.monotonic)
    # windows (processor.core.windowing)
    late_readings: int = 0  # their window had closed: not counted, still published
    aggregates_published: int = 0  # closed windows acknowledged and persisted
    state_bytes: int = 0  # the owned partitions' window state in memory
    peak_state_bytes: int = 0
    open_windows: int = 0
    # quality control: published points' flags by (field, QARTOD flag)
    qc_flags: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def finished(self) -> int:
        return self.published + self.dead_lettered_total

    def summary(self) -> dict[str, Any]:
        """The run in numbers (logged at stop; read by tests, the demo and the benchmark)."""
        return {
            "consumed": self.consumed,
            "published": self.published,
            "dead_lettered": self.dead_lettered_total,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "handed_back": self.handed_back,
            "pauses": dict(self.pauses),
            "peak_buffered": self.peak_buffered,
            "buffer_max": self.buffer_max,
            "peak_memory_mb": round(self.peak_memory / MIB, 1),
            "memory_budget_mb": round(self.memory_budget / MIB, 1),
            **self._windows_summary(),
            **self._qc_summary(),
        }

    def _qc_summary(self) -> dict[str, Any]:
        """The points' QC flags by field, then flag (QC off: nothing)."""
        by_field: dict[str, dict[str, int]] = {}
        for (name, flag), count in sorted(self.qc_flags.items()):
            by_field.setdefault(name, {})[str(flag)] = count
        return {"qc_flags": by_field} if by_field else {}

    def _windows_summary(self) -> dict[str, Any]:
        if not self.peak_state_bytes:  # windows off
            return {}
        return {
            "aggregates": self.aggregates_published,
            "late_readings": self.late_readings,
            "peak_state_mb": round(self.peak_state_bytes / MIB, 2),
        }
