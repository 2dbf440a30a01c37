"""``processor run``: one processor with its telemetry and HTTP endpoints, until a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from processor.config import Settings
from processor.core.pipeline import Processor
from processor.errors import ConfigError
from processor.telemetry.endpoints import Endpoints, Health
from processor.telemetry.otel import Telemetry
from processor.wiring import kafka_processor


async def serve(settings: Settings, install_signals: Callable[[Callable[[], None]], None]) -> int:
    telemetry = Telemetry.from_env(settings)
    processor = kafka_processor(settings, observer=telemetry)
    install_signals(processor.stop)  # before start-up: a stop while starting is graceful too
    async with exposed(processor, telemetry, settings.http_host, settings.http_port):
        return await processor.run()


@contextlib.asynccontextmanager
async def exposed(
    processor: Processor, telemetry: Telemetry, host: str, port: int
) -> AsyncIterator[int | None]:
    """Metrics of ``processor`` and, unless ``port`` is 0, its HTTP endpoints.

    Yields the bound port (None without HTTP). On the way out the listener closes and the
    exporters flush, in a worker thread since an OTLP flush blocks on the network.
    """
    telemetry.watch(processor.stats)
    endpoints = Endpoints(Health(processor), telemetry.prometheus_text)
    try:
        bound = None
        if port:
            try:
                bound = await endpoints.start(host, port)
            except OSError as exc:
                raise ConfigError(
                    f"invalid setting PROCESSOR_HTTP_PORT (--http-port): cannot listen on "
                    f"{host}:{port}: {exc.strerror or exc}"
                ) from None
        yield bound
    finally:
        await endpoints.close()
        await asyncio.to_thread(telemetry.shutdown)
