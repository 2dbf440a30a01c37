"""Plain counters and gauges the pipeline updates; telemetry and the demo only read them.

Keeping them free of OpenTelemetry lets the core run (and be tested) without it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


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
    broker_reachable: bool = True  # see processor.broker_watch
    broker_answered: float = field(default_factory=time.monotonic)  # its last answer
    committed_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # one past taken
    last_loop: float = field(default_factory=time.monotonic)

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def finished(self) -> int:
        return self.published + self.dead_lettered_total
