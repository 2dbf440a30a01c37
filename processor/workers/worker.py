"""A stage worker process: ``python -m processor.workers.worker FD``, started by
:mod:`processor.workers` with its end of a socket pair as ``FD``.

It imports the stage and the framing and nothing else: not the settings (it is sent a plain
:class:`StageSettings`), not telemetry or the Kafka clients, and not the parent's main
module, which a ``multiprocessing`` child re-imports whole. Messages both ways are pickles
behind an 8-byte length: first the settings in and ``None`` (ready) or a ``ConfigError``
out, then jobs in and ``(ok, result or exception)`` out, in order.

It ignores SIGINT/SIGTERM (the parent drains and then stops it) and exits when the parent's
end closes, which happens however the parent ends, so a ``kill -9`` of the processor leaves
no orphans.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import socket
import struct
import sys
from typing import Any

from processor.errors import ConfigError
from processor.workers.framing import StageThenFrame

FRAME = struct.Struct("!Q")  # the length of the pickle that follows


def unpickle(data: bytes | bytearray) -> Any:
    return pickle.loads(data)  # noqa: S301 - written by this program, over a private socket pair


def serve(channel: socket.socket) -> None:
    """A worker's life: build the stage, then run jobs until the parent closes its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent drains first, then closes
    with contextlib.suppress(ConnectionError):  # the parent is gone: nobody to answer
        settings = _receive(channel)
        if settings is None:
            return
        try:
            stage = StageThenFrame.of(settings)
            stage.warm_up()
        except ConfigError as exc:  # reported by the parent as one line
            _send(channel, exc)
            return
        _send(channel, None)
        while (job := _receive(channel)) is not None:
            try:
                outcome: tuple[bool, object] = (True, stage.run(job))
            except Exception as exc:  # the parent raises it where it awaits the result
                outcome = (False, exc)
            _send(channel, outcome)


def _send(channel: socket.socket, value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    channel.sendall(FRAME.pack(len(data)))
    channel.sendall(data)


def _receive(channel: socket.socket) -> Any:
    """The next pickled value, or None at the end of input."""
    header = _read(channel, FRAME.size)
    if header is None:
        return None
    (size,) = FRAME.unpack(header)
    data = _read(channel, size)
    return None if data is None else unpickle(data)


def _read(channel: socket.socket, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = channel.recv_into(view[got:])
        if not count:
            return None
        got += count
    return buffer


if __name__ == "__main__":
    with socket.socket(fileno=int(sys.argv[1])) as parent:
        serve(parent)
