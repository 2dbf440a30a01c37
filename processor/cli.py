"""``processor``: the service, a sample producer, a local broker, the settings, the demo.

Settings are parsed only by ``processor.config`` (flags from ``processor.flags``); this
module only dispatches the commands and
turns deliberate errors into one line and a non-zero exit. It imports the rest of the
processor only once SIGTERM/SIGINT are caught: the imports alone take a second or two, and a
stop asked for then must end in a clean exit 0 too, not a death by the signal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from processor.errors import ProcessorError

EXIT_CONFIG = 2
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


DESCRIPTION = """\
A backpressure-aware geospatial stream processor for Kafka: it reads JSON sensor readings,
validates and reprojects them, and publishes points and dead letters. Every setting is a
flag, a PROCESSOR_* environment variable or a key of a TOML file (--config);
'processor config' prints the effective ones and where each came from."""

EPILOG = """\
first run, no Kafka needed: 'processor broker' starts an embedded broker and prints the
'processor run' and 'processor sample' lines to paste in two more terminals.
'processor COMMAND --help' lists the options of one command."""


def _parser() -> argparse.ArgumentParser:
    from processor.flags import add_setting_flags  # noqa: PLC0415 - see the docstring

    parser = argparse.ArgumentParser(
        prog="processor",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        usage="%(prog)s [options]",
        help="consume, reproject and publish until SIGTERM/SIGINT",
        description="Consume the input topic, reproject, publish points and dead letters; "
        "SIGTERM/SIGINT drains and commits, then exit 0. Exit 2: did not start.",
    )
    add_setting_flags(run, "run")

    sample = commands.add_parser(
        "sample",
        usage="%(prog)s [options]",
        help="publish synthetic readings to the input topic",
        description="Publish synthetic sensor readings (some invalid on purpose) to the input "
        "topic, with a progress line every few seconds and a summary at the end.",
    )
    sample.add_argument(
        "--rate",
        type=_at_least(0.1, float),
        default=100.0,
        help="readings per second (default %(default)g)",
    )
    sample.add_argument(
        "--sensors",
        type=_at_least(1, int),
        default=200,
        help="distinct sensor ids, in four regions (default %(default)s)",
    )
    sample.add_argument(
        "--count",
        type=_at_least(0, int),
        default=0,
        help="stop after this many readings (default %(default)s: until Ctrl-C)",
    )
    sample.add_argument(
        "--invalid-ratio",
        type=_fraction,
        default=0.01,
        help="share of malformed readings, every kind the contract names (default %(default)g)",
    )
    add_setting_flags(sample, "sample")

    broker = commands.add_parser(
        "broker",
        usage="%(prog)s [options]",
        help="an embedded Kafka broker for a local run, until Ctrl-C",
        description="Start the embedded broker (Tansu) on loopback, create the input, output "
        "and dead-letter topics, and print the 'processor run' and 'processor sample' lines "
        "to paste. Ctrl-C stops it (memory storage: the topics go with it).",
    )
    broker.add_argument(
        "--port",
        type=_port,
        default=9092,
        help="loopback port to listen on; 0 picks a free one (default %(default)s)",
    )
    broker.add_argument(
        "--partitions",
        type=_at_least(1, int),
        default=4,
        help="partitions of each topic (default %(default)s)",
    )
    add_setting_flags(broker, "broker")

    config = commands.add_parser(
        "config",
        usage="%(prog)s [options]",
        help="print the effective settings and where each came from",
        description="Print the settings 'processor run' would use, each with its source "
        "(default, profile, file, env, flag), secrets masked, as a TOML file.",
    )
    add_setting_flags(config, "config")

    demo = commands.add_parser(
        "demo",
        usage="%(prog)s [options]",
        help="a wildfire-smoke burst through the processor, live, on an embedded broker",
        description="A minute of synthetic sensor traffic with a burst on two partitions, "
        "through the processor on an embedded broker, with a live view, a summary and a plot.",
    )
    demo.add_argument(
        "--duration",
        type=_at_least(5.0, float),
        default=60.0,
        help="seconds of sensor traffic; the backlog drains after it (default %(default)g)",
    )
    demo.add_argument(
        "--sensors",
        type=_at_least(8, int),
        default=300,
        help="sensors of the synthetic network, 2 readings/s each (default %(default)s)",
    )
    demo.add_argument(
        "--partitions",
        type=_at_least(3, int),
        default=6,
        help="partitions of each topic (default %(default)s)",
    )
    demo.add_argument(
        "--output-dir",
        type=Path,
        default=Path("demo-output"),
        help="where the summary and the plot go (default %(default)s)",
    )
    demo.add_argument(
        "--no-live",
        action="store_true",
        help="plain periodic lines instead of the live view (default: live on a terminal)",
    )
    return parser


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


def _at_least(low: float, kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}")
        return value

    return parse


def _demo(args: argparse.Namespace) -> int:
    try:
        from processor.demo.app import DemoOptions, run_demo  # noqa: PLC0415 - only with the extra
    except ModuleNotFoundError as exc:
        raise ProcessorError(
            f"the demo needs the 'demo' extra ({exc.name} is missing): "
            "pip install 'geo-stream-processor[demo]'"
        ) from None
    options = DemoOptions(
        duration_s=args.duration,
        sensors=int(args.sensors),
        partitions=int(args.partitions),
        output_dir=args.output_dir,
        live=not args.no_live and sys.stdout.isatty(),
    )
    return asyncio.run(run_demo(options))


class _EarlyStop:
    """SIGTERM/SIGINT from the first line of ``main``: remembered until the event loop's
    handlers take over, then acted on at once."""

    def __init__(self) -> None:
        self.asked = False
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._remember)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True

    def hand_over(self, stop: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, stop)
        if self.asked:
            stop()

    def release(self) -> None:
        """The default handlers again (the demo handles its own signals)."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    early = _EarlyStop()
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            early.release()
            if early.asked:
                return 130
            from processor.telemetry.logs import setup_logging  # noqa: PLC0415 - see the docstring

            setup_logging("WARNING", "text")
            return _demo(args)
        return _serve(args, early)
    except ProcessorError as exc:
        print(f"processor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace, early: _EarlyStop) -> int:
    """The commands built on the settings; ``run``, ``sample`` and ``broker`` stop on
    SIGTERM/SIGINT."""
    # The heavy imports, now that a signal only asks for a stop:
    from processor.config_sources import resolve_settings, unknown_variables  # noqa: PLC0415
    from processor.flags import flag_overrides  # noqa: PLC0415
    from processor.telemetry.logs import setup_logging  # noqa: PLC0415

    for warning in unknown_variables(os.environ):
        print(f"processor: warning: {warning}", file=sys.stderr)
    settings, sources = resolve_settings(flag_overrides(args), args.config)
    if args.command == "config":
        from processor.config_report import render  # noqa: PLC0415

        print(render(settings, sources))
        return 0
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "broker":
        from processor.tools.local_broker import serve_broker  # noqa: PLC0415

        return asyncio.run(
            serve_broker(
                settings,
                early.hand_over,
                port=args.port,
                partitions=args.partitions,
                out=sys.stdout,
            )
        )
    if args.command == "sample":
        from processor.tools.sample import Pace, publish_samples  # noqa: PLC0415

        pace = Pace(args.rate, args.sensors, args.count, args.invalid_ratio)
        return asyncio.run(publish_samples(settings, early.hand_over, pace))
    from processor.service import serve  # noqa: PLC0415

    return asyncio.run(serve(settings, early.hand_over))


if __name__ == "__main__":
    sys.exit(main())
