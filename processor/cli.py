"""``processor``: run the service, the demo, or a sample producer.

Settings are parsed only by ``processor.config``; this module only maps flags onto it and
turns deliberate errors into one line and a non-zero exit. It imports the rest of the
processor only once SIGTERM/SIGINT are caught: the imports alone take a second or two, and a
stop asked for then must end in a clean exit 0 too, not a death by the signal.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from processor.errors import ProcessorError

EXIT_CONFIG = 2
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _parser() -> argparse.ArgumentParser:
    from processor.config import add_setting_flags  # noqa: PLC0415 - see the docstring

    parser = argparse.ArgumentParser(prog="processor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="consume, reproject and publish until SIGTERM")
    run.add_argument("--config", type=Path, help="TOML file of settings (lowest priority)")
    add_setting_flags(run)

    demo = commands.add_parser(
        "demo", help="a wildfire-smoke burst through the processor, live, on an embedded broker"
    )
    demo.add_argument(
        "--duration",
        type=_at_least(5.0, float),
        default=60.0,
        help="seconds of sensor traffic; the backlog drains after it (default 60)",
    )
    demo.add_argument("--sensors", type=_at_least(8, int), default=300, help="(default 300)")
    demo.add_argument("--partitions", type=_at_least(3, int), default=6, help="(default 6)")
    demo.add_argument("--output-dir", type=Path, default=Path("demo-output"))
    demo.add_argument(
        "--no-live", action="store_true", help="plain periodic lines instead of the live view"
    )

    sample = commands.add_parser("sample", help="publish synthetic readings to the input topic")
    sample.add_argument("--rate", type=float, default=100.0, help="readings per second")
    sample.add_argument("--sensors", type=int, default=200)
    sample.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    sample.add_argument("--invalid-ratio", type=float, default=0.01)
    sample.add_argument("--config", type=Path, help="TOML file of settings (lowest priority)")
    add_setting_flags(sample)
    return parser


def _at_least(low: float, kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}")
        return value

    return parse


def _demo(args: argparse.Namespace) -> int:
    try:
        from processor.demo import DemoOptions, run_demo  # noqa: PLC0415 - only with the extra
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
            from processor.logs import setup_logging  # noqa: PLC0415 - see the docstring

            setup_logging("WARNING", "text")
            return _demo(args)
        return _serve(args, early)
    except ProcessorError as exc:
        print(f"processor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace, early: _EarlyStop) -> int:
    """``run`` or ``sample``, which stop on SIGTERM/SIGINT."""
    # The heavy imports, now that a signal only asks for a stop:
    from processor.config import flag_overrides, load_settings  # noqa: PLC0415
    from processor.logs import setup_logging  # noqa: PLC0415
    from processor.sample import publish_samples  # noqa: PLC0415
    from processor.service import serve  # noqa: PLC0415

    settings = load_settings(flag_overrides(args), args.config)
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "sample":
        return asyncio.run(
            publish_samples(
                settings,
                early.hand_over,
                rate=args.rate,
                sensors=args.sensors,
                count=args.count,
                invalid_ratio=args.invalid_ratio,
            )
        )
    return asyncio.run(serve(settings, early.hand_over))


if __name__ == "__main__":
    sys.exit(main())
