"""``processor demo``: a wildfire-smoke burst through the processor, with nothing but Python.

Starts the embedded broker, creates the topics and runs the processor in-process with a
small buffer, a memory budget and a stage slowed to a few times the network's nominal rate,
so that the burst outruns it and backpressure visibly engages. A synthetic sensor network
(``scenario``) publishes readings, bursts on one region and calms down; a live view (or plain
lines) shows what happens; at the end a summary, its JSON copy and a PNG of the run. Ctrl-C
ends it early and cleanly: the network stops, the processor drains and commits, the broker
stops.
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
from processor.demo.live import MIB, Sample, plain_line, render, take_sample
from processor.demo.scenario import Scenario, SensorNetwork
from processor.demo.story import story
from processor.kafka.admin import create_topics
from processor.kafka.clients import make_producer
from processor.kafka.publisher import Publisher
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


def demo_settings(bootstrap: str, scenario: Scenario, output_dir: Path) -> Settings:
    """Small limits so a burst of a few thousand readings per second engages them."""
    capacity = _CAPACITY * scenario.nominal
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
        **FAST_GROUP,
    )


@dataclass(slots=True)
class _Run:
    history: list[Sample]
    processor: dict[str, Any]  # Processor.summary()
    exit_code: int
    interrupted: bool


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
) -> list[Sample]:
    """Sample until the backlog is drained after the traffic, or a stop, or a failure."""
    running, producing = tasks
    scenario = network.scenario
    history: list[Sample] = []
    started = time.monotonic()
    while not (stop.is_set() or running.done()):
        elapsed = time.monotonic() - started
        history.append(take_sample(processor, network, elapsed, scenario.phase(elapsed)))
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
    history.append(take_sample(processor, network, time.monotonic() - started, "done"))
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
    try:
        async with exposed(processor, telemetry, "127.0.0.1", free_port()) as port:
            print(f"metrics while it runs: http://127.0.0.1:{port}/metrics", flush=True)
            await processor.start()
            tasks = (
                asyncio.create_task(processor.run()),
                asyncio.create_task(network.run(stop)),
            )
            with _view(options.live, "geo-stream-processor demo") as show:
                history = await _watch(processor, network, tasks, stop, show)
            tasks[1].result()  # a failed sensor network ends the demo with its error
    finally:
        await producer.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return _Run(history, processor.summary(), tasks[0].result(), interrupted.is_set())


def _summary(run: _Run, scenario: Scenario) -> dict[str, Any]:
    last = run.history[-1]
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
        "story": story(run.history, scenario.hot_partitions),
    }


def _print_summary(summary: dict[str, Any], where: Path, picture: Path) -> None:
    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in values.items()) or "none"

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
        ("plot", str(picture)),
    ]  # fmt: skip
    note = " (interrupted)" if summary["interrupted"] else ""
    print(f"\nsummary after {summary['duration_s']} s{note}, also in {where}")
    for label, value in rows:
        print(f"  {label:<32} {value}")
    print("what happened:")
    for line in summary["story"]:
        print(f"  - {line}")


async def run_demo(options: DemoOptions) -> int:
    out = options.output_dir
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "spill", ignore_errors=True)  # the broker is new: old spill is stale
    scenario = Scenario(
        sensors=options.sensors, duration_s=options.duration_s, partitions=options.partitions
    )
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        settings = demo_settings(broker.bootstrap_servers, scenario, out)
        topics = [settings.input_topic, settings.output_topic, settings.dlq_topic]
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
        run = await _run(settings, scenario, options)
    summary = _summary(run, scenario)
    # matplotlib (~50 MB) only now: while the demo runs, the processor's memory is its own
    from processor.demo.plot import plot  # noqa: PLC0415

    picture = plot(
        run.history,
        out / "demo.png",
        f"{scenario.sensors} sensors, smoke burst x{scenario.burst:g} on {scenario.hot_region} "
        f"(partitions {hot})",
        (settings.buffer_high, settings.buffer_low),
        scenario.full_burst(),
    )
    where = out / "summary.json"
    where.write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, where, picture)
    if run.interrupted:
        return 130
    return 0 if summary["accounted"] and run.exit_code == 0 else 1
