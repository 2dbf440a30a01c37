"""aiokafka client construction from settings: connection, security and tuning in one place."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from processor.config import Settings
from processor.errors import ConfigError
from processor.kafka._aiokafka_private import bare_value, fast_paths, use_bare_records

#: Upper bound of one fetch response, whatever the budget: prefetch must not defeat the bound.
MAX_FETCH_BYTES = 32 * 1024 * 1024
#: How long a reader's fetch waits at the end of a partition: the reader stops there.
READER_WAIT_MS = 20


def security_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client: protocol, TLS context, SASL."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.uses_tls:
        options["ssl_context"] = _tls_context(settings)
    if settings.uses_sasl:
        password = settings.sasl_password
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """The client's TLS context; a file that is not what its setting says is a ConfigError."""
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            f"invalid setting PROCESSOR_SSL_CAFILE (--ssl-cafile): not a PEM CA bundle: {exc}"
        ) from None
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        try:
            context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
        except ssl.SSLError as exc:
            raise ConfigError(
                "invalid setting PROCESSOR_SSL_CERTFILE (--ssl-certfile): not a PEM certificate "
                f"matching PROCESSOR_SSL_KEYFILE (--ssl-keyfile): {exc}"
            ) from None
    return context


def fetch_bytes(settings: Settings, budget_bytes: int) -> tuple[int, int]:
    """(fetch_max_bytes, max_partition_fetch_bytes) derived from the memory budget.

    A fetch response is held by the client until we take it, so it counts against the
    budget: one response may use at most 1/16 of it, and one partition a quarter of that.
    """
    total = max(256 * 1024, min(MAX_FETCH_BYTES, budget_bytes // 16))
    per_partition = max(64 * 1024, min(settings.max_payload_bytes + 1024, total // 4))
    return total, max(per_partition, 64 * 1024)


def make_consumer(settings: Settings, budget_bytes: int) -> Any:
    """A consumer that never auto-commits (offsets are committed only for finished work) and
    hands out bare records when that fast path is on (:mod:`processor.kafka._aiokafka_private`),
    else aiokafka's ``ConsumerRecord`` objects."""
    fetch_max, partition_max = fetch_bytes(settings, budget_bytes)
    bare = fast_paths(settings.aiokafka_fast_paths).fetch
    if bare:
        use_bare_records()
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        request_timeout_ms=settings.request_timeout_ms,
        fetch_max_bytes=fetch_max,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=partition_max,
        value_deserializer=bare_value if bare else None,
        **security_options(settings),
    )


def make_reader(settings: Settings, budget_bytes: int) -> Any:
    """A consumer outside the group, for partitions it is assigned by hand and reads to their
    end (the window state's changelog): it commits nothing, and an offset out of range starts
    it at the beginning. It reads one partition at a time, which may fill a whole fetch."""
    fetch_max, _ = fetch_bytes(settings, budget_bytes)
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=settings.request_timeout_ms,
        fetch_max_bytes=fetch_max,
        fetch_max_wait_ms=READER_WAIT_MS,
        max_partition_fetch_bytes=fetch_max,
        **security_options(settings),
    )


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        request_timeout_ms=settings.request_timeout_ms,
        **security_options(settings),
    )


def make_producer(settings: Settings) -> Any:
    acks: int | str = settings.acks if settings.acks == "all" else int(settings.acks)
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        acks=acks,
        enable_idempotence=settings.enable_idempotence,
        compression_type=None if settings.compression_type == "none" else settings.compression_type,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_bytes,
        max_request_size=max(settings.max_batch_bytes, settings.max_payload_bytes * 2),
        request_timeout_ms=settings.request_timeout_ms,
        **security_options(settings),
    )
