"""Run the scenarios: one embedded broker, one preloaded input topic, a worker process per
member, a fresh consumer group and fresh output topics per run.

A run ends when the group's committed offsets (read from outside with OffsetFetch) reach the
input's end offsets: the harness then sends SIGTERM and collects each worker's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from bench.measure import window
from bench.worker import MIB, Spec
from processor.kafka.admin import create_topics
from processor.qc import PROFILE_QC
from processor.tools.embedded_broker import FAST_GROUP, EmbeddedBroker
from processor.tools.synthetic import REGIONS, readings

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "raw",
    "raw_batch",
    "naive",
    "processor",
    "commit_1s",
    "budget_256",
    "budget_512",
    "scale",
    "burst",
    "geofence",
    "windows",
    "qc",
)
#: The budget scenarios: ``processor`` with ``MEMORY_LIMIT_MB`` set (edge gateways).
BUDGETS = {"budget_256": 256, "budget_512": 512}
#: The windows scenario: hourly windows of two fields with dedup, over the input's sensors.
WINDOWS = {"window": "1h", "aggregate_fields": "pm25,battery", "dedup": "true"}
#: The windows, plus every QC test on both fields (the air_quality profile's on pm25, and a
#: rate of change, which the profile leaves out: its sensors report faster than once a second).
QC = {
    **WINDOWS,
    "qc": json.dumps({
        "pm25": {
            **PROFILE_QC["air_quality"]["pm25"],
            "rate_of_change_suspect": 2.0,
            "rate_of_change_fail": 10.0,
        },
        "battery": {
            "gross_range_fail": [3.0, 4.3], "gross_range_suspect": [3.4, 4.2],
            "spike_suspect": 0.2, "spike_fail": 0.5,
            "rate_of_change_suspect": 0.01, "rate_of_change_fail": 0.1,
            "flat_line_suspect": 10, "flat_line_fail": 30, "flat_line_tolerance": 0.001,
        },
    }),
}  # fmt: skip
SENSORS = 1_000  # of the preloaded input, each reporting once a minute in event time
EVENT_INTERVAL_S = 60 / SENSORS
WATERSHEDS = 1_000  # polygons of the geofence scenario
WATERSHED_VERTICES = 300
POLL_S = 0.1
STOP_TIMEOUT_S = 60.0


class BenchError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Options:
    records: int = 200_000
    repeat: int = 3
    scenarios: tuple[str, ...] = SCENARIOS
    out: Path = Path("bench/results")
    partitions: int = 4
    burst_buffer: int = 2000
    burst_delay_ms: float = 50.0
    burst_memory_mb: int = 256
    raw_max_records: int = 20_000
    raw_in_flight: int = 1
    settings: tuple[tuple[str, str], ...] = ()  # PROCESSOR_* overrides of the processor runs
    profile: str | None = None  # the scenario to run once more under py-spy
    input_compression: str = "none"  # codec of the preloaded input batches


@dataclass(frozen=True, slots=True)
class Plan:
    worker: str  # the bench.worker scenario
    processes: int = 1
    settings: dict[str, str] = field(default_factory=dict)  # extra PROCESSOR_* settings
    tuning: dict[str, Any] = field(default_factory=dict)  # Spec fields of the raw loops
    burst: bool = False
    windows: bool = False  # an aggregates topic and a state directory per run


def plan(name: str, options: Options) -> Plan:
    overrides = dict(options.settings)
    if name == "processor":
        return Plan("processor", settings=overrides)
    if name == "commit_1s":  # the commit timer of earlier versions: what following acks costs
        return Plan("processor", settings={**overrides, "commit_interval_s": "1.0"})
    if name in BUDGETS:
        return Plan("processor", settings={**overrides, "memory_limit_mb": str(BUDGETS[name])})
    if name == "scale":
        return Plan("processor", processes=2, settings=overrides)
    if name == "burst":
        burst = {
            "buffer_max_records": str(options.burst_buffer),
            "stage_delay_ms": str(options.burst_delay_ms),
            "memory_limit_mb": str(options.burst_memory_mb),
        }
        return Plan("processor", settings={**overrides, **burst}, burst=True)
    if name == "geofence":
        fences = watersheds(options.out / "watersheds.geojson")
        tagging = {"geofences": str(fences), "outside_policy": "pass"}
        return Plan("processor", settings={**overrides, **tagging})
    if name == "windows":
        return Plan("processor", settings={**overrides, **WINDOWS}, windows=True)
    if name == "qc":
        return Plan("processor", settings={**overrides, **QC}, windows=True)
    if name in ("raw", "raw_batch"):
        tuning = {"max_records": options.raw_max_records, "in_flight": options.raw_in_flight}
        return Plan(name, tuning=tuning)
    return Plan(name)


def watersheds(path: Path) -> Path:
    """1,000 watershed-like polygons (~300 vertices, overlapping) over the sample regions."""
    if path.exists():
        return path
    rng = np.random.default_rng(11)
    per_region = WATERSHEDS // len(REGIONS)
    features = []
    for name, (west, south, east, north) in REGIONS.items():
        side = int(np.ceil(np.sqrt(per_region)))
        step_x, step_y = (east - west) / side, (north - south) / side
        for i in range(per_region):
            cx = west + (i % side + 0.5) * step_x
            cy = south + (i // side + 0.5) * step_y
            angles = np.linspace(0, 2 * np.pi, WATERSHED_VERTICES, endpoint=False)
            wobble = 0.75 + 0.15 * np.sin(angles * rng.integers(3, 9)) + rng.uniform(0, 0.05)
            ring = np.c_[
                cx + wobble * step_x * np.cos(angles), cy + wobble * step_y * np.sin(angles)
            ]
            coordinates = [[*map(float, p)] for p in (*ring, ring[0])]
            features.append(
                {
                    "type": "Feature",
                    "properties": {"id": f"{name}-{i:04d}"},
                    "geometry": {"type": "Polygon", "coordinates": [coordinates]},
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@dataclass(slots=True)
class Context:
    options: Options
    bootstrap: str
    input_topic: str
    ends: dict[int, int]
    logs: Path


async def preload(
    bootstrap: str, topic: str, count: int, compression: str = "none"
) -> dict[int, int]:
    """Publish ``count`` readings through the batch API, keyed as ``send()`` would, in
    batches compressed with ``compression``; returns the end offset of each partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        compression_type=None if compression == "none" else compression,
        max_batch_size=MIB,
        max_request_size=2 * MIB,
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        ends = dict.fromkeys(partitions, 0)
        batches: dict[int, Any] = {}
        futures: list[asyncio.Future[Any]] = []
        for key, value, _ in readings(count, sensors=SENSORS, interval_s=EVENT_INTERVAL_S):
            partition = int(partitioner(key, partitions, partitions))
            batch = batches.setdefault(partition, producer.create_batch())
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            ends[partition] += 1
        for partition, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ends


def worker_env(spec: Spec, plan: Plan, spill: Path) -> dict[str, str]:
    """The environment of a worker: no stray PROCESSOR_*/OTEL_* settings, no exporters."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "OTEL_"))}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    if plan.worker == "processor":
        settings = {
            "bootstrap_servers": spec.bootstrap,
            "input_topic": spec.input_topic,
            "output_topic": spec.output_topic,
            "dlq_topic": spec.dlq_topic,
            "group_id": spec.group,
            "enable_idempotence": "false",
            "http_port": "0",
            "spill_dir": str(spill),
            **{name: str(value) for name, value in FAST_GROUP.items()},
            **plan.settings,
        }
        env.update({f"PROCESSOR_{name.upper()}": value for name, value in settings.items()})
    return env


async def committed(consumer: Any, topic: str, partitions: list[int]) -> dict[int, int]:
    found = {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
    return {p: offset for p, offset in found.items() if offset is not None}


async def wait_committed(
    ctx: Context,
    group: str,
    workers: list[asyncio.subprocess.Process],
    deadline: float,
    on_first_commit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Poll the group's commits from outside until they reach the end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=ctx.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        while True:
            if any(w.returncode is not None for w in workers):
                raise BenchError("a worker exited before the end")
            if time.monotonic() > deadline:
                raise BenchError("timed out before every record was committed")
            offsets = await committed(consumer, ctx.input_topic, list(ctx.ends))
            if offsets and on_first_commit is not None:
                await on_first_commit()
                on_first_commit = None
            if all(offsets.get(p, -1) >= end for p, end in ctx.ends.items()):
                return
            await asyncio.sleep(POLL_S)
    finally:
        await consumer.stop()


async def stop_workers(workers: list[asyncio.subprocess.Process]) -> None:
    for worker in workers:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            await asyncio.wait_for(worker.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            worker.kill()
            await worker.wait()


def _tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def run_once(
    ctx: Context,
    name: str,
    repeat: int,
    on_first_commit: Callable[[list[int]], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """One run of a scenario; its metrics, or ``error`` if it did not finish."""
    how = plan(name, ctx.options)
    tag = f"{name}-{repeat}-{uuid.uuid4().hex[:6]}"
    output, dlq, group = f"bench.{tag}.out", f"bench.{tag}.dlq", f"bench.{tag}"
    aggregates = [f"bench.{tag}.agg"] if how.windows else []
    await create_topics(ctx.bootstrap, [output, dlq, *aggregates], ctx.options.partitions)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    if how.windows:
        how = replace(
            how,
            settings={
                **how.settings,
                "aggregates_topic": aggregates[0],
                "state_dir": str(tmp / "state"),
            },
        )
    specs = [
        Spec(
            how.worker,
            ctx.bootstrap,
            ctx.input_topic,
            output,
            dlq,
            group,
            str(tmp / f"{i}.json"),
            burst=how.burst,
            **how.tuning,
        )
        for i in range(how.processes)
    ]
    logs = [ctx.logs / f"{tag}.{i}.log" for i in range(how.processes)]
    total = sum(ctx.ends.values())
    deadline = time.monotonic() + 120 + total / 1000
    started = time.monotonic()
    workers = []
    run: dict[str, Any] = {
        "scenario": name,
        "repeat": repeat,
        "processes": how.processes,
        "load_before": os.getloadavg()[0],
    }
    try:
        for i, spec in enumerate(specs):
            with logs[i].open("wb") as log:
                workers.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "bench.worker",
                        json.dumps(asdict(spec)),
                        cwd=ROOT,
                        env=worker_env(spec, how, tmp / f"spill-{i}"),
                        stdout=log,
                        stderr=log,
                    )
                )
        hook = None
        if on_first_commit is not None:
            hook = functools.partial(on_first_commit, [w.pid for w in workers])
        await wait_committed(ctx, group, workers, deadline, hook)
    except BenchError as exc:
        run["error"] = f"{exc}; log tail: {_tail(logs[0])}"
    finally:
        await stop_workers(workers)
        run["wall_s"] = time.monotonic() - started
    results = _results(specs, logs)
    if how.windows:
        state = tmp / "state"
        run["state_disk_mb"] = sum(f.stat().st_size for f in state.rglob("*") if f.is_file()) / MIB
    shutil.rmtree(tmp, ignore_errors=True)
    changelog = [f"{group}-windows-changelog"] if how.windows else []
    await delete_topics(ctx.bootstrap, [output, dlq, *aggregates, *changelog])
    if not results:
        run.setdefault("error", f"no result from a worker; log tail: {_tail(logs[0])}")
        return run
    return {**run, **metrics(results, total)}


def _results(specs: list[Spec], logs: list[Path]) -> list[dict[str, Any]]:
    try:
        results = [json.loads(Path(spec.result).read_text()) for spec in specs]
    except (OSError, ValueError):
        return []
    for result, log in zip(results, logs, strict=True):  # a rebalance spoils a scale run
        result["assignments"] = log.read_text(errors="replace").count('"partitions assigned"')
    return results


def metrics(results: list[dict[str, Any]], total: int) -> dict[str, Any]:
    found = window([r.pop("samples") for r in results], total)
    rss = [r["peak_rss_bytes"] / MIB for r in results]
    out: dict[str, Any] = {
        "peak_rss_mb": max(rss),
        "peak_rss_mb_each": rss,
        "workers": results,
    }
    if found is None:
        out["error"] = "progress never reached every record"
    else:
        out.update(
            rate=found.rate,
            cpu_us_per_record=found.cpu_us_per_record,
            window_s=found.seconds,
            window_records=found.records,
            basis=found.basis,
        )
    return out


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Free the broker's memory (memory storage) between runs; best effort."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    with contextlib.suppress(Exception):
        await admin.start()
        await admin.delete_topics(topics)
    with contextlib.suppress(Exception):
        await admin.close()


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profile(ctx: Context, name: str, out: Path) -> Path | None:
    """One extra run of scenario ``name`` (not counted) with py-spy attached from its first commit
    on, so start-up and the group join stay out of the profile. ``--gil`` keeps only samples
    of the thread holding the GIL: Python CPU time, whichever thread spends it. Returns the
    collapsed stacks."""
    spy = _py_spy()
    if spy is None:
        print("profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        return None
    stacks = out / f"profile-{name}.txt"
    recorders: list[asyncio.subprocess.Process] = []

    async def attach(pids: list[int]) -> None:
        command = [
            spy,
            "record",
            "--pid",
            str(pids[0]),
            "--rate",
            "500",
            "--gil",
            "--format",
            "raw",
        ]
        recorders.append(
            await asyncio.create_subprocess_exec(
                *command,
                "--output",
                str(stacks),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )

    run = await run_once(ctx, name, -1, attach)
    for recorder in recorders:
        await asyncio.wait_for(recorder.wait(), STOP_TIMEOUT_S)
    if "error" in run or not recorders:
        print(f"profile: failed: {run.get('error', 'py-spy wrote nothing')}", file=sys.stderr)
        return None
    return stacks


async def run_all(options: Options) -> tuple[dict[str, Any], list[dict[str, Any]], Path | None]:
    """Every scenario ``repeat`` times, interleaved so that drift hits them all alike."""
    options.out.mkdir(parents=True, exist_ok=True)
    logs = options.out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    runs: list[dict[str, Any]] = []
    with EmbeddedBroker(log_path=options.out / "broker.log") as broker:
        topic = f"bench.input.{uuid.uuid4().hex[:6]}"
        await create_topics(broker.bootstrap_servers, [topic], options.partitions)
        began = time.monotonic()
        ends = await preload(
            broker.bootstrap_servers, topic, options.records, options.input_compression
        )
        print(
            f"preloaded {options.records:,} readings ({options.input_compression}) "
            f"in {time.monotonic() - began:.1f} s"
        )
        ctx = Context(options, broker.bootstrap_servers, topic, ends, logs)
        for repeat in range(options.repeat):
            for name in options.scenarios:
                run = await run_once(ctx, name, repeat)
                runs.append(run)
                print(_line(run), flush=True)
        stacks = await profile(ctx, options.profile, options.out) if options.profile else None
    meta = {
        "records": options.records,
        "partitions": options.partitions,
        "input_compression": options.input_compression,
        "ends": ends,
        "cpus": os.cpu_count(),
        "aiokafka": importlib.metadata.version("aiokafka"),
        "git": _git_describe(),
        "processor_sha1": _sources_digest(),
        "options": {k: str(v) for k, v in asdict(options).items()},
        "load_after": os.getloadavg(),
    }
    return meta, runs, stacks


def _git_describe() -> str:
    found = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() or "unknown"


def _sources_digest() -> str:
    """Which processor code was measured (the work tree may be ahead of any commit)."""
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted((ROOT / "processor").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _line(run: dict[str, Any]) -> str:
    head = f"{run['scenario']:>10} #{run['repeat'] + 1}"
    if "error" in run:
        return f"{head}: FAILED: {run['error']}"
    return (
        f"{head}: {run['rate']:>9,.0f} rec/s over {run['window_s']:.2f} s ({run['basis']}), "
        f"{run['cpu_us_per_record']:.1f} CPU us/rec, "
        f"wall {run['wall_s']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MiB"
    )
