"""The demo's sensor network: a few hundred sensors at a nominal rate, a wildfire-smoke burst
on one region, then calm again. The smoke shows in the readings too: the burning region's pm25
rises from clean air to hazardous with the burst's intensity, while the others stay clean.

The burning region's sensor ids are chosen so that their keys land on a few partitions by
murmur2, as any Kafka producer would place them, so a burst from one region is a burst on one
or two partitions: exactly what per-partition pausing is for. Readings are paced in ticks
against the clock and published through the batch API; ``acked`` counts only what the
broker acknowledged, per partition, which on the demo's fresh topics are the end offsets.

Each tick's readings of a region are stamped evenly across the tick (a sensor reporting 40
times a second stamps its readings 25 ms apart), so no sensor reporting under 1,000 times a
second stamps two readings with the same millisecond, which deduplication would take for a
repeat. A partition's event time may so step back by up to a tick where one region's readings
follow another's.

**Event time runs fast.** The sensors' clock runs :attr:`Scenario.time_scale` times the wall
clock, so that a sixth of the run is an hour of event time: hourly windows close five or six
times in a demo, and the aggregates carry the NowCast, the number an air-quality network
publishes. Two sensors of a calm region are faulty, for quality control to flag: one is stuck
at one value, the other spikes now and then.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from processor.kafka.batches import KeyPartitioner
from processor.kafka.publisher import Publisher
from processor.tools.synthetic import BAD_INPUTS, REGIONS, reading

_TICK_S = 0.1
_BAD = [payload for kind, (payload, _) in sorted(BAD_INPUTS.items()) if kind != "too_large"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """Rates over time: ``rate`` readings/s per sensor, ``burst`` times that on ``hot_region``."""

    sensors: int
    duration_s: float
    partitions: int
    rate: float = 2.0
    burst: float = 20.0
    hot_region: str = "sierra"
    hot_partitions: tuple[int, ...] = (0, 1)
    invalid_ratio: float = 0.01
    clean_pm25: tuple[float, float] = (5.0, 25.0)  # µg/m³, uniform: clean air
    smoke_pm25: float = 350.0  # µg/m³ the smoke adds at the burst's full strength
    stuck_pm25: float = 12.0  # what the stuck sensor always reads
    spike_pm25: float = 600.0  # µg/m³ the spiking sensor adds to every fifth reading

    @property
    def hour_s(self) -> float:
        """Wall seconds of an event-time hour: a sixth of the run, in whole seconds (10 s of
        the default minute)."""
        return float(max(1, round(self.duration_s / 6)))

    @property
    def time_scale(self) -> float:
        """Event-time seconds per wall-clock second (360 in the default minute)."""
        return 3600 / self.hour_s

    @property
    def nominal(self) -> float:
        """Readings per second of the whole network outside the burst."""
        return self.sensors * self.rate

    def intensity(self, elapsed: float) -> float:
        """Burst multiplier of the hot region: 1, ramps up, holds, ramps down, 1 again."""
        x = elapsed / self.duration_s
        top = self.burst - 1
        if x < 0.15 or x >= 0.55:
            return 1.0
        if x < 0.25:
            return 1 + top * (x - 0.15) / 0.10
        if x < 0.45:
            return self.burst
        return 1 + top * (0.55 - x) / 0.10

    def smoke(self, elapsed: float) -> float:
        """How thick the hot region's smoke is, from 0 (none) to 1 (the burst at full strength):
        it comes and goes with the burst."""
        return 0.0 if self.burst <= 1 else (self.intensity(elapsed) - 1) / (self.burst - 1)

    def pm25(self, region: str, elapsed: float, rng: random.Random) -> float:
        """A reading's pm25: clean air, plus the smoke in the hot region."""
        smoke = self.smoke(elapsed) if region == self.hot_region else 0.0
        return rng.uniform(*self.clean_pm25) + smoke * self.smoke_pm25

    def full_burst(self) -> tuple[float, float]:
        """Seconds between which the burst is at full strength."""
        return 0.25 * self.duration_s, 0.45 * self.duration_s

    def phase(self, elapsed: float) -> str:
        if elapsed >= self.duration_s:
            return "draining"
        intensity = self.intensity(elapsed)
        if intensity >= self.burst:
            return f"smoke burst x{self.burst:g} ({self.hot_region})"
        if intensity > 1:
            return "burst building" if elapsed / self.duration_s < 0.35 else "burst calming"
        return "calm"

    def faulty(self, network: dict[str, list[str]]) -> tuple[str, str]:
        """The stuck sensor and the spiking one: the first two of the first calm region."""
        calm = next(ids for region, ids in network.items() if region != self.hot_region)
        return calm[0], calm[1]

    def network(self) -> dict[str, list[str]]:
        """Sensor ids per region; the hot region's keys all land on ``hot_partitions``."""
        regions = list(REGIONS)
        counts = {name: self.sensors // len(regions) for name in regions}
        counts[regions[0]] += self.sensors - sum(counts.values())
        partition_of = KeyPartitioner(range(self.partitions))
        ids: dict[str, list[str]] = {}
        for name in regions:
            chosen: list[str] = []
            for i in range(1_000_000):
                sensor = f"{name}-{i:05d}"
                hot = partition_of(sensor.encode()) in self.hot_partitions
                if name != self.hot_region or hot:
                    chosen.append(sensor)
                if len(chosen) == counts[name]:
                    break
            ids[name] = chosen
        return ids


@dataclass(slots=True)
class SensorNetwork:
    """Publishes the scenario's readings to ``topic`` until its duration ends or ``stop``."""

    scenario: Scenario
    publisher: Publisher
    topic: str
    acked: Counter[int] = field(default_factory=Counter)  # per partition
    invalid: int = 0
    started_ms: int = 0  # when the sensors started, in ms since the epoch (as event times are)
    _rng: random.Random = field(default_factory=lambda: random.Random(7))  # noqa: S311 - synthetic
    _partition: dict[str, int] = field(default_factory=dict)
    _stuck: str = ""
    _spiky: str = ""
    _spiky_readings: int = 0

    @property
    def produced(self) -> int:
        return sum(self.acked.values())

    async def run(self, stop: asyncio.Event) -> None:
        network = self.scenario.network()
        self._stuck, self._spiky = self.scenario.faulty(network)
        partition_of = KeyPartitioner(range(self.scenario.partitions))
        for sensor in (s for ids in network.values() for s in ids):
            self._partition[sensor] = partition_of(sensor.encode())
        owed = dict.fromkeys(network, 0.0)
        turn = dict.fromkeys(network, 0)
        started, origin = time.monotonic(), datetime.now(UTC)
        self.started_ms = int(origin.timestamp() * 1000)
        ticks = 0
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed >= self.scenario.duration_s:
                return
            batch: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
            for region, sensors in network.items():
                boost = (
                    self.scenario.intensity(elapsed) if region == self.scenario.hot_region else 1
                )
                owed[region] += len(sensors) * self.scenario.rate * boost * _TICK_S
                count, owed[region] = divmod(owed[region], 1.0)
                picked = list(self._pick(sensors, turn, region, int(count)))
                tick = origin + timedelta(seconds=ticks * _TICK_S * self.scenario.time_scale)
                batch.extend(self._tick(region, picked, tick, elapsed))
            futures = await self.publisher.publish(self.topic, batch)
            await asyncio.gather(*futures)
            self.acked.update(self._partition[key.decode()] for key, _, _ in batch if key)
            ticks += 1
            ahead = started + ticks * _TICK_S - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)

    @staticmethod
    def _pick(sensors: list[str], turn: dict[str, int], region: str, count: int) -> Iterator[str]:
        for _ in range(count):
            yield sensors[turn[region] % len(sensors)]
            turn[region] += 1

    def _tick(
        self, region: str, sensors: list[str], start: datetime, elapsed: float
    ) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
        """A region's readings of one tick, from ``start`` on, stamped evenly across it."""
        scenario = self.scenario
        step = timedelta(seconds=_TICK_S * scenario.time_scale / max(1, len(sensors)))
        for i, sensor in enumerate(sensors):
            pm25 = scenario.pm25(region, elapsed, self._rng)
            if sensor == self._stuck:
                pm25 = scenario.stuck_pm25
            elif sensor == self._spiky:
                self._spiky_readings += 1
                if self._spiky_readings % 5 == 0:
                    pm25 += scenario.spike_pm25
            yield sensor.encode(), self._reading(sensor, start + i * step, pm25), []

    def _reading(self, sensor: str, when: datetime, pm25: float) -> bytes:
        if self._rng.random() < self.scenario.invalid_ratio:
            self.invalid += 1
            return self._rng.choice(_BAD)
        return reading(sensor, when, self._rng, pm25)
