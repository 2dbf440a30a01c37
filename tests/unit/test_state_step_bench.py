"""``python -m bench.state_step`` runs the engine's state step over its input and reports what
the note of the windows scenario quotes: every hour closed is published once per sensor, and
every sensor's row reaches the changelog."""

from __future__ import annotations

from bench.state_step import run


async def test_the_state_step_bench_counts_and_saves_every_sensor() -> None:
    # 100 sensors, 150 minutes of readings: hours 0 and 1 close (the watermark passes 2:10).
    result = await run(records=15_000, sensors=100, batch=1_000, pace_s=0.0)
    assert result["aggregates"] == 2 * 100
    assert result["sensor_rows"] >= 100
    assert 0 < result["bytes_per_sensor_row"] < 2_000
    assert result["cpu_us_per_record"] > 0
