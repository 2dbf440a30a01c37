"""``python -m bench``: see ``bench/__init__.py`` and the README's Performance section."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.harness import SCENARIOS, Options, run_all
from bench.profile import top_costs
from bench.report import write
from processor.kafka.batches import CODECS


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; know {SCENARIOS}")
    return names


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip().lower().removeprefix("processor_"), value


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="readings to preload")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument(
        "--scenarios", type=_scenarios, default=SCENARIOS, help=f"subset of {','.join(SCENARIOS)}"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--burst-buffer", type=int, default=2000, help="BUFFER_MAX_RECORDS")
    parser.add_argument("--burst-delay-ms", type=float, default=50.0, help="STAGE_DELAY_MS")
    parser.add_argument("--burst-memory-mb", type=int, default=256, help="MEMORY_LIMIT_MB")
    parser.add_argument(
        "--raw-max-records", type=int, default=20_000, help="raw loops: records per getmany"
    )
    parser.add_argument(
        "--raw-in-flight", type=int, default=1, help="raw loops: unacknowledged batches"
    )
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a processor setting for the processor, scale and burst runs (e.g. linger_ms=0)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="processor",
        metavar="SCENARIO",
        help="one extra run of SCENARIO (default processor) under py-spy",
    )
    parser.add_argument(
        "--input-compression",
        choices=list(CODECS),
        default="none",
        help="codec of the preloaded input batches (default none)",
    )
    args = parser.parse_args(argv)
    return Options(
        records=args.records,
        repeat=args.repeat,
        scenarios=args.scenarios,
        out=args.out,
        partitions=args.partitions,
        burst_buffer=args.burst_buffer,
        burst_delay_ms=args.burst_delay_ms,
        burst_memory_mb=args.burst_memory_mb,
        raw_max_records=args.raw_max_records,
        raw_in_flight=args.raw_in_flight,
        settings=tuple(args.set),
        profile=args.profile,
        input_compression=args.input_compression,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    meta, runs, stacks = asyncio.run(run_all(options))
    costs = top_costs(stacks) if stacks is not None else None
    if costs is not None:
        (options.out / f"profile-{options.profile}.md").write_text(costs)
        print(costs)
    result = write(options.out, meta, runs, options.scenarios, costs)
    print(f"wrote {options.out / 'results.json'} and {options.out / 'results.png'}")
    failed = sum(s["failed"] for s in result["summary"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
