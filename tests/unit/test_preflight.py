"""processor.preflight against real local sockets: what a server that refuses, stays silent or
speaks TLS with an unknown certificate looks like to an operator. (Brokers that refuse a login
or lack a topic: tests/integration/test_startup.py.)"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from processor.config import Settings
from processor.errors import BrokerUnavailableError, TlsHandshakeError
from processor.kafka.preflight import check_cluster
from processor.tools.embedded_broker import free_port


@asynccontextmanager
async def silent_server(tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Accepts connections (and the TLS handshake, with ``tls``), then never answers."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=tls)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in connections:
            writer.close()
        server.close()


def settings(bootstrap: str, **overrides: Any) -> Settings:
    return Settings(bootstrap_servers=bootstrap, request_timeout_ms=1_000, **overrides)


async def test_nothing_listening_is_unreachable_with_the_reason() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailableError) as caught:
        await check_cluster(settings(bootstrap))
    assert str(caught.value) == (
        f"cannot reach PROCESSOR_BOOTSTRAP_SERVERS (--bootstrap-servers) {bootstrap!r}: "
        f"{bootstrap}: connection refused"
    )


async def test_a_server_that_never_answers_is_named_with_the_step_and_the_timeout() -> None:
    async with silent_server() as bootstrap:
        with pytest.raises(BrokerUnavailableError) as caught:
            await check_cluster(settings(bootstrap))
    assert str(caught.value) == (
        f"{bootstrap} accepted the connection but did not answer ApiVersions within "
        "PROCESSOR_REQUEST_TIMEOUT_MS (--request-timeout-ms) 1000"
    )


async def test_tls_to_a_listener_without_it_hints_at_the_protocol() -> None:
    async with silent_server() as bootstrap:
        with pytest.raises(BrokerUnavailableError) as caught:
            await check_cluster(settings(bootstrap, security_protocol="SSL"))
    assert "did not answer the TLS handshake" in str(caught.value)
    assert "a listener without TLS? check PROCESSOR_SECURITY_PROTOCOL" in str(caught.value)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed, and its key (by the openssl tool)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_an_unknown_certificate_is_a_tls_failure_naming_the_ca_setting(
    tmp_path: Path,
) -> None:
    cert, key = await asyncio.to_thread(self_signed, tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    async with silent_server(server_side) as bootstrap:
        with pytest.raises(TlsHandshakeError) as caught:
            await check_cluster(settings(bootstrap, security_protocol="SSL"))
    message = str(caught.value)
    assert message.startswith(f"TLS handshake with {bootstrap} failed (self-signed certificate)")
    assert "PROCESSOR_SSL_CAFILE (--ssl-cafile) (unset)" in message
    assert "PROCESSOR_SECURITY_PROTOCOL (--security-protocol) SSL" in message


async def test_of_two_servers_the_one_that_got_further_is_reported() -> None:
    refused = f"127.0.0.1:{free_port()}"
    async with silent_server() as silent:
        with pytest.raises(BrokerUnavailableError) as caught:
            await check_cluster(settings(f"{refused},{silent}"))
    assert str(caught.value).startswith(f"{silent} accepted the connection")
