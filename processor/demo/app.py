"""``processor demo``: a wildfire-smoke burst through the processor, with nothing but Python.

Starts the embedded broker, creates the topics and runs the processor in-process with a
small buffer, a memory budget and a stage slowed to a few times the network's nominal rate,
so that the burst outruns it and backpressure visibly engages. A synthetic sensor network
(``scenario``) publishes readings, bursts on one region and calms down; a live view (or plain
lines) shows what happens. Hourly windows are on, and the sensors' clock runs fast enough that
an hour is a sixth of the run: the demo reads the closed windows' aggregates back from their
topic and shows pm25 and its EPA NowCast AQI per region, where the smoke stands out. Quality
control flags pm25 (a stuck sensor and a spiking one are in the network). At the end a
summary, its JSON copy and a PNG of the run. Ctrl-C ends it early and cleanly: the network
stops, the processor drains and commits, the broker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from processor.config import Settings
from processor.core.pipeline import Processor
from processor.demo.aggregates import FIELD, RegionAggregates, read_aggregates
from processor.demo.live import MIB, Sample, plain_line, render, take_sample
from processor.demo.scenario import Scenario, SensorNetwork
from processor.demo.story import story
from processor.kafka.admin import create_topics
from processor.kafka.clients import make_producer
from processor.kafka.publisher import Publisher
from processor.qc import PROFILE_QC
from processor.service import exposed
from processor.telemetry.otel import Telemetry
from processor.tools.embedded_broker import FAST_GROUP, EmbeddedBroker, free_port
from processor.wiring import kafka_processor

if importlib.util.find_spec("matplotlib") is None:  # imported only to draw, at the end
    raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

_SAMPLE_S = 0.25
_PLAIN_EVERY = 8  # samples per plain line: one every 2 s
_DRAIN_DEADLINE_S = 120.0
_BUFFER = 1000
# A fetch of up to one batch that lands just under the high watermark (80 %) overshoots the
# buffer and the overshoot spills; a batch a little over a quarter of the buffer makes that
# happen now and then, as it does in production when fetches are large next to the buffer.
_BATCH = 260
_CAPACITY = 5.0  # the slowed stage keeps up with about this many times the nominal rate


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float = 60.0
    sensors: int = 300
    partitions: int = 6
    output_dir: Path = Path("demo-output")
    live: bool = True


#: The windows: hourly, in the sensors' fast event time a sixth of the run (10 s of the default
#: minute), which puts the burst (15 to 55 % of the run) across two or three windows between
#: calm ones, whatever ``--duration`` is; hourly windows of pm25 carry the NowCast.
WINDOW_MS = 3_600_000
#: pm25's QC: the air_quality profile's tests (range, spike, flat line; docs/qc.md), which
#: leave the rate of change out, as it would judge the fast clock's seconds anyway.
QC_TESTS = {FIELD: PROFILE_QC["air_quality"][FIELD]}


def demo_settings(bootstrap: str, scenario: Scenario, output_dir: Path) -> Settings:
    """Small limits so a burst of a few thousand readings per second engages them; hourly
    windows of pm25 per sensor, deduplicated and quality-controlled, as an air-quality network
    would run them."""
    capacity = _CAPACITY * scenario.nominal
    window = WINDOW_MS
    return Settings(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        group_id="processor-demo",
        spill_dir=output_dir / "spill",
        http_port=0,
        buffer_max_records=_BUFFER,
        batch_max_records=_BATCH,
        stage_delay_ms=1000 * _BATCH / capacity,
        memory_limit_mb=256,
        spill_max_bytes=64 * MIB,
        spill_min_free_mb=50,
        commit_interval_s=0.5,
        window=window,
        aggregate_fields=(FIELD,),
        # A fifth of the window (12 minutes: 2 s of 10 s). Readings are stamped at the sensors'
        # clock and nothing here delays them, so a partition's event time steps back only
        # within a tick (0.1 s, scenario's stamping); the lateness covers that with room to
        # spare and delays each window's aggregate by no more than a fifth of its length.
        allowed_lateness=window // 5,
        dedup=True,
        qc=QC_TESTS,
        state_dir=output_dir / "state",
        **FAST_GROUP,
    )


@dataclass(slots=True)
class _Run:
    history: list[Sample]
    processor: dict[str, Any]  # Processor.summary()
    exit_code: int
    interrupted: bool
    regions: RegionAggregates
    started_ms: int  # the sensors' start: the windows' times are told from it


@contextlib.contextmanager
def _view(live: bool, header: str) -> Iterator[Callable[[list[Sample]], None]]:
    if not live:

        def line(history: list[Sample]) -> None:
            if len(history) % _PLAIN_EVERY == 1:
                print(plain_line(history), flush=True)

        yield line
        return
    with Live(console=Console(), refresh_per_second=4, transient=False) as screen:
        yield lambda history: screen.update(render(history, header))


async def _watch(
    processor: Processor,
    network: SensorNetwork,
    tasks: tuple[asyncio.Task[int], asyncio.Task[None]],
    stop: asyncio.Event,
    show: Callable[[list[Sample]], None],
    *,
    regions: RegionAggregates,
) -> list[Sample]:
    """Sample until the backlog is drained after the traffic, or a stop, or a failure."""
    running, producing = tasks
    scenario = network.scenario
    history: list[Sample] = []
    started = time.monotonic()
    while not (stop.is_set() or running.done()):
        elapsed = time.monotonic() - started
        history.append(take_sample(processor, network, regions, elapsed, scenario.phase(elapsed)))
        show(history)
        if producing.done():
            drained = processor.stats.finished >= network.produced
            late = elapsed > scenario.duration_s + _DRAIN_DEADLINE_S
            if drained or late or producing.exception() is not None:
                break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _SAMPLE_S)
    stop.set()
    processor.stop()
    await asyncio.wait(tasks)
    history.append(take_sample(processor, network, regions, time.monotonic() - started, "done"))
    return history


async def _run(settings: Settings, scenario: Scenario, options: DemoOptions) -> _Run:
    stop, interrupted = asyncio.Event(), asyncio.Event()

    def interrupt() -> None:
        interrupted.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    telemetry = Telemetry.from_env(settings)
    processor = kafka_processor(settings, observer=telemetry)
    producer = make_producer(settings)  # the sensors' producer, with the demo's settings
    await producer.start()
    network = SensorNetwork(scenario, Publisher([producer]), settings.input_topic)
    regions = RegionAggregates(WINDOW_MS, scenario.time_scale)
    read_all = asyncio.Event()
    try:
        async with exposed(processor, telemetry, "127.0.0.1", free_port()) as port:
            print(f"metrics while it runs: http://127.0.0.1:{port}/metrics", flush=True)
            await processor.start()
            reading = asyncio.create_task(
                read_aggregates(
                    settings, regions, read_all, lambda: processor.stats.aggregates_published
                )
            )
            tasks = (
                asyncio.create_task(processor.run()),
                asyncio.create_task(network.run(stop)),
            )
            try:
                with _view(options.live, "geo-stream-processor demo") as show:
                    history = await _watch(processor, network, tasks, stop, show, regions=regions)
                read_all.set()  # every aggregate is out: read on to the last
                await reading
            finally:
                if not reading.done():  # the watch failed
                    reading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reading
            tasks[1].result()  # a failed sensor network ends the demo with its error
    finally:
        await producer.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return _Run(
        history,
        processor.summary(),
        tasks[0].result(),
        interrupted.is_set(),
        regions,
        network.started_ms,
    )


def _summary(run: _Run, scenario: Scenario, settings: Settings) -> dict[str, Any]:
    last = run.history[-1]
    stuck, spiky = scenario.faulty(scenario.network())
    return {
        "duration_s": round(last.elapsed, 1),
        "sensors": scenario.sensors,
        "partitions": scenario.partitions,
        "burst": {
            "region": scenario.hot_region,
            "factor": scenario.burst,
            "partitions": list(scenario.hot_partitions),
        },
        "in": last.produced,
        **run.processor,
        "dead_lettered_by_code": dict(sorted(last.dead_lettered.items())),
        "accounted": last.finished == last.produced,
        "interrupted": run.interrupted,
        "windows": {
            "length_s": run.regions.length_ms / 1000,
            "wall_s": scenario.hour_s,
            "allowed_lateness_s": settings.allowed_lateness / 1000,
            "aggregates_read": run.regions.read,
            "pm25_by_region": run.regions.summary(run.started_ms),
        },
        "qc": {
            "stuck": stuck,
            "spiking": spiky,
            "flagged": {sensor: run.regions.flagged[sensor] for sensor in (stuck, spiky)},
            "most_flagged": dict(run.regions.flagged.most_common(5)),
        },
        "story": story(run.history, scenario.hot_partitions),
    }


def _print_summary(summary: dict[str, Any], where: Path, picture: Path) -> None:
    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in values.items()) or "none"

    windows = summary["windows"]
    balance = "yes" if summary["accounted"] else "NO"
    if summary["interrupted"] and not summary["accounted"]:
        left = summary["in"] - summary["published"] - summary["dead_lettered"]
        balance = f"not yet: interrupted with {left:,} still in Kafka, uncommitted"
    rows = [
        ("readings in", f"{summary['in']:,}  (acknowledged by the broker)"),
        ("published", f"{summary['published']:,}"),
        ("dead-lettered", f"{summary['dead_lettered']:,}  "
         f"({counts(summary['dead_lettered_by_code'])})"),
        ("in == published + dead-lettered", balance),
        ("pauses", counts(summary["pauses"])),
        ("spilled / replayed", f"{summary['spilled']:,} / {summary['replayed']:,} records; "
         f"handed back to Kafka {summary['handed_back']:,}"),
        ("peak buffer", f"{summary['peak_buffered']:,} of {summary['buffer_max']:,} records"),
        ("peak memory", f"{summary['peak_memory_mb']} MB of {summary['memory_budget_mb']} MB"),
        ("windows", f"1 h ({windows['wall_s']:g} s of the demo), lateness "
         f"{windows['allowed_lateness_s'] / 60:g} min: {summary.get('aggregates', 0):,} "
         f"aggregates ({windows['aggregates_read']:,} read back), "
         f"{summary.get('late_readings', 0):,} late readings"),
        ("pm25 QC flags", counts(summary.get("qc_flags", {}).get(FIELD, {}))),
        ("most flagged (suspect+failed)", counts(summary["qc"]["most_flagged"])),
        ("faulty sensors", f"{summary['qc']['stuck']} stuck, {summary['qc']['spiking']} "
         "spiking"),
        ("plot", str(picture)),
    ]  # fmt: skip
    note = " (interrupted)" if summary["interrupted"] else ""
    print(f"\nsummary after {summary['duration_s']} s{note}, also in {where}")
    for label, value in rows:
        print(f"  {label:<32} {value}")
    _print_regions(windows["pm25_by_region"], summary["burst"]["region"])
    print("what happened:")
    for line in summary["story"]:
        print(f"  - {line}")


def _print_regions(by_region: dict[str, list[dict[str, Any]]], hot: str) -> None:
    """A table: a row per region, the mean pm25 of each window (t: its start)."""
    if not by_region:
        print(f"{FIELD} by region: no window closed")
        return
    print(f"{FIELD} by region, the mean of each window (µg/m³; t: the window's start, s):")
    starts = next(iter(by_region.values()))
    print(f"  {'t':<8}" + "".join(f"{round(w['t']):>7}" for w in starts) + "   readings counted")
    for region, windows in by_region.items():
        means = "".join(
            f"{'-' if w['pm25_mean'] is None else round(w['pm25_mean']):>7}" for w in windows
        )
        readings = sum(w["readings"] for w in windows)
        print(f"  {region:<8}{means}   {readings:,}" + ("  (smoke)" if region == hot else ""))
    print("NowCast AQI of pm25 by region (EPA, 2024 breakpoints; from the second hour):")
    for region, windows in by_region.items():
        values = "".join(f"{'-' if w['aqi'] is None else w['aqi']:>7}" for w in windows)
        print(f"  {region:<8}{values}" + ("  (smoke)" if region == hot else ""))


async def run_demo(options: DemoOptions) -> int:
    out = options.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("spill", "state"):  # the broker is new: old spill and state are stale
        shutil.rmtree(out / stale, ignore_errors=True)
    scenario = Scenario(
        sensors=options.sensors, duration_s=options.duration_s, partitions=options.partitions
    )
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        settings = demo_settings(broker.bootstrap_servers, scenario, out)
        topics = [
            settings.input_topic,
            settings.output_topic,
            settings.dlq_topic,
            settings.aggregates_topic,
        ]
        await create_topics(broker.bootstrap_servers, topics, scenario.partitions)
        hot = ", ".join(map(str, scenario.hot_partitions))
        print(
            f"embedded broker on {broker.bootstrap_servers}, {scenario.partitions} partitions; "
            f"{scenario.sensors} sensors at {scenario.nominal:,.0f} readings/s, a smoke burst "
            f"x{scenario.burst:g} on {scenario.hot_region} (partitions {hot}); buffer "
            f"{settings.buffer_max_records:,} records, memory budget "
            f"{settings.memory_limit_mb} MB, stage slowed to ~{_CAPACITY * scenario.nominal:,.0f}"
            f" records/s",
            flush=True,
        )
        print(
            f"hourly windows ({scenario.hour_s:g} s) of {FIELD} per sensor, "
            f"lateness {settings.allowed_lateness / 1000:g} s, deduplicated, to "
            f"{settings.aggregates_topic}",
            flush=True,
        )
        run = await _run(settings, scenario, options)
    summary = _summary(run, scenario, settings)
    # matplotlib (~50 MB) only now: while the demo runs, the processor's memory is its own
    from processor.demo.plot import plot  # noqa: PLC0415

    picture = plot(
        run.history,
        out / "demo.png",
        f"{scenario.sensors} sensors, smoke burst x{scenario.burst:g} on {scenario.hot_region} "
        f"(partitions {hot})",
        (settings.buffer_high, settings.buffer_low),
        scenario.full_burst(),
        pm25=run.regions.means(run.started_ms),
        window_s=scenario.hour_s,
        hot=scenario.hot_region,
    )
    where = out / "summary.json"
    where.write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, where, picture)
    if run.interrupted:
        return 130
    return 0 if summary["accounted"] and run.exit_code == 0 else 1
