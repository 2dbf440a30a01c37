"""``processor run``: one processor plus its signal handling, until a graceful stop."""

from __future__ import annotations

from collections.abc import Callable

from processor.config import Settings
from processor.pipeline import Processor


async def serve(settings: Settings, install_signals: Callable[[Callable[[], None]], None]) -> int:
    processor = Processor(settings)
    await processor.start()
    install_signals(processor.stop)
    return await processor.run()
