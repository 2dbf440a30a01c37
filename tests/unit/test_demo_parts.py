"""The demo's pure parts: the scenario's sensors, burst and smoke, samples and rates, the live
view, the plain lines and the PNG."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from rich.console import Console

from processor.demo.live import Sample, plain_line, rate_series, rates, render
from processor.demo.plot import Hour, plot
from processor.demo.scenario import Scenario
from processor.tools.synthetic import REGIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_hot_region_lands_on_the_hot_partitions_only() -> None:
    scenario = Scenario(sensors=300, duration_s=60, partitions=6)
    network = scenario.network()
    assert set(network) == set(REGIONS)
    assert sum(len(ids) for ids in network.values()) == 300
    every = list(range(6))
    partitioner = DefaultPartitioner()
    hot = {partitioner(s.encode(), every, every) for s in network[scenario.hot_region]}
    assert hot == set(scenario.hot_partitions)
    others = {partitioner(s.encode(), every, every) for s in network["alps"]}
    assert others == set(every)
    assert all(len(set(ids)) == len(ids) for ids in network.values())


def test_burst_ramps_up_holds_and_calms_down() -> None:
    scenario = Scenario(sensors=100, duration_s=100, partitions=4, burst=20)
    shape = [scenario.intensity(t) for t in range(100)]
    assert shape[:15] == [1.0] * 15
    assert shape[25:45] == [20.0] * 20
    assert scenario.full_burst() == (25.0, 45.0)
    assert shape[55:] == [1.0] * 45
    assert shape[15:25] == sorted(shape[15:25])
    assert shape[45:55] == sorted(shape[45:55], reverse=True)
    assert scenario.phase(5) == "calm"
    assert scenario.phase(30).startswith("smoke burst x20")
    assert scenario.phase(20) == "burst building"
    assert scenario.phase(50) == "burst calming"
    assert scenario.phase(100) == "draining"
    assert scenario.nominal == 200


def test_the_smoke_raises_the_hot_regions_pm25_with_the_burst_only() -> None:
    scenario = Scenario(sensors=100, duration_s=100, partitions=4, burst=20)
    rng = random.Random(1)
    low, high = scenario.clean_pm25
    others = [region for region in REGIONS if region != scenario.hot_region]
    calm = [scenario.pm25(region, t, rng) for region in others for t in (5, 30, 80)]
    calm += [scenario.pm25(scenario.hot_region, t, rng) for t in (5, 80)]
    assert all(low <= value <= high for value in calm), calm
    smoke = [scenario.smoke(t) for t in (5, 20, 30, 50, 80)]
    assert smoke == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    thick = scenario.pm25(scenario.hot_region, 30, rng)
    assert low + scenario.smoke_pm25 <= thick <= high + scenario.smoke_pm25


def _sample(t: float, produced: int, finished: int, **changes: object) -> Sample:
    values: dict[str, object] = {
        "elapsed": t,
        "phase": "calm",
        "produced": produced,
        "consumed": finished,
        "finished": finished,
        "dead_lettered": {"invalid_json": 2},
        "buffered": 300,
        "buffer_max": 1000,
        "paused": {0: ("buffer", "partition_share"), 3: ("buffer",)},
        "pauses": {"buffer": 5},
        "spill_records": 0,
        "spill_bytes": 0,
        "memory_used": 100 * 1024 * 1024,
        "memory_budget": 256 * 1024 * 1024,
        "lag": {0: 1200, 1: 0, 2: 3, 3: 40},
        "pm25": {"alps": (20.0, 14.6, None), "sierra": (10.0, 301.4, 351)},
        **changes,
    }
    return Sample(**values)  # type: ignore[arg-type]


HISTORY = [_sample(t / 2, 1000 * t, 400 * t) for t in range(10)]


def test_rates_over_a_sliding_window() -> None:
    assert rates(HISTORY[:1]) == (0.0, 0.0, 0.0)
    assert rates(HISTORY) == (2000.0, 800.0, 800.0)
    series = rate_series(HISTORY)
    assert series[0] == (0.0, 0.0, 0.0)
    assert series[1:] == [(2000.0, 800.0, 800.0)] * 9


def test_paused_by_reason_counts_partitions() -> None:
    assert HISTORY[0].paused_by_reason == {"buffer": 2, "partition_share": 1}


def test_plain_line_says_it_all_in_one_line() -> None:
    line = plain_line(HISTORY)
    assert "\n" not in line
    for part in ("in  2,000/s", "out    800/s", "buffer  30%", "paused 2 (buffer 2,",
                 "mem 100/256 MB", "dead letters 2", "| pm25 alps 15 sierra 301"):  # fmt: skip
        assert part in line, line
    assert "pm25" not in plain_line([_sample(0, 0, 0, pm25={})])


def test_live_view_renders_partitions_reasons_and_dead_letters() -> None:
    console = Console(width=120, record=True, color_system=None)
    console.print(render(HISTORY, "demo"))
    text = console.export_text()
    for part in ("throughput", "backpressure", "paused: buffer, partition_share", "fetching",
                 "1,200", "invalid_json", "100/256 MB", "300/1,000 records",
                 "alps 15 (t=20 s)", "sierra 301 (t=10 s, AQI 351)"):  # fmt: skip
        assert part in text, text
    console.print(render([_sample(0, 0, 0, pm25={})], "demo"))
    assert "no window closed yet" in console.export_text()


def test_plot_writes_a_png(tmp_path: Path) -> None:
    history = [*HISTORY, _sample(5.0, 10_000, 4_000, memory_used=0, spill_bytes=4096)]
    pm25: dict[str, list[Hour]] = {
        "alps": [(0.0, 14.0, None), (2.0, None, None)],
        "sierra": [(0.0, 15.0, None), (2.0, 290.0, 341)],
    }
    path = plot(history, tmp_path / "run.png", "title", (0.8, 0.3), (1.0, 3.0),
                pm25=pm25, window_s=2.0, hot="sierra")  # fmt: skip
    assert path.read_bytes()[:8] == PNG_MAGIC
    empty = plot(history, tmp_path / "none.png", "title", (0.8, 0.3), (1.0, 3.0),
                 pm25={}, window_s=2.0, hot="sierra")  # fmt: skip
    assert empty.read_bytes()[:8] == PNG_MAGIC
