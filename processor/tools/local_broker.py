"""``processor broker``: the embedded broker for a local run, until Ctrl-C.

It creates the processor's three topics and prints the ``processor run`` and ``processor
sample`` lines to paste, with the settings this broker needs already in them (no idempotent
producer, a short group session: see ``processor.broker``), so a first run needs nothing
but Python and three terminals.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import socket
import sys
from collections.abc import Callable
from typing import TextIO

from processor.config import Settings, flag_name
from processor.errors import ConfigError
from processor.flags import TOPICS, show
from processor.kafka.admin import create_topics
from processor.tools.embedded_broker import FAST_GROUP, EmbeddedBroker, free_port

_WATCH_S = 0.5


async def serve_broker(
    settings: Settings,
    install_signals: Callable[[Callable[[], None]], None],
    *,
    port: int,
    partitions: int,
    out: TextIO,
) -> int:
    """Run the broker until a stop is asked for (exit 0) or the broker dies (exit 1)."""
    stop = asyncio.Event()
    install_signals(stop.set)
    broker = EmbeddedBroker(_usable(port))
    try:
        broker.start()
        await create_topics(
            broker.bootstrap_servers, [getattr(settings, name) for name in TOPICS], partitions
        )
        print(instructions(settings, broker.bootstrap_servers, partitions), file=out, flush=True)
        while not stop.is_set() and broker.alive():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _WATCH_S)
        died = not stop.is_set()
    finally:
        broker.stop()
    if died:
        print("processor: the embedded broker exited by itself", file=sys.stderr)
        return 1
    print("broker stopped; its topics are gone with it (memory storage)", file=out, flush=True)
    return 0


def _usable(port: int) -> int:
    """``port``, or a free one for 0; a port in use is a one-line error, not a broker that
    exits with a code and nothing else."""
    if port == 0:
        return free_port()
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(
                f"invalid setting --port: cannot listen on 127.0.0.1:{port}: "
                f"{exc.strerror or exc} (--port 0 picks a free one)"
            ) from None
    return port


def instructions(settings: Settings, bootstrap: str, partitions: int) -> str:
    """What to paste in the other two terminals."""
    topics = [getattr(settings, name) for name in TOPICS]
    connect = [flag_name("bootstrap_servers"), bootstrap, flag_name("enable_idempotence"), "false"]
    group = [part for name, value in FAST_GROUP.items() for part in (flag_name(name), show(value))]
    run = ["processor", "run", *connect, *_topic_flags(settings, TOPICS), *group]
    sample = ["processor", "sample", *connect, *_topic_flags(settings, ("input_topic",))]
    return "\n".join(
        [
            f"embedded broker listening on {bootstrap}",
            f"topics: {', '.join(topics)} ({partitions} partitions each)",
            "",
            "in a second terminal, the processor:",
            f"  {shlex.join([*run, '--log-format', 'text'])}",
            "in a third, synthetic readings for it:",
            f"  {shlex.join([*sample, '--rate', '200'])}",
            "",
            "the idempotent producer is off (this broker lacks it for aiokafka) and the group",
            "session is short (it answers a group join after half the session timeout).",
            "Ctrl-C stops the broker.",
        ]
    )


def _topic_flags(settings: Settings, names: tuple[str, ...]) -> list[str]:
    """Flags for the topics not at their defaults."""
    return [
        part
        for name in names
        if getattr(settings, name) != Settings.model_fields[name].default
        for part in (flag_name(name), getattr(settings, name))
    ]
