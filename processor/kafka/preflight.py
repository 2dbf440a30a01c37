"""The start-up check of the Kafka cluster: a failure is one line naming its cause and settings.

aiokafka reports every failure to start as "Unable to bootstrap", and a SCRAM login that the
broker refuses as a ``KeyError: 'v'`` from inside its client (the server's last SCRAM message
is an error, ``e=unknown-user``, where the client looks for its signature, ``v=...``). So
before the clients start, each bootstrap server is taken through the steps the clients take,
and the first step that fails names the cause:

1. connect: TCP, then TLS when the protocol has it, then ApiVersions -> unreachable, TLS
   handshake, not a Kafka listener of that protocol;
2. log in, for SASL protocols: is the mechanism offered, then the login itself;
3. ask for the topics the command uses without creating them -> missing topic; a broker that
   closes the connection here wants a login that the settings do not give;
4. with the idempotent producer on, ask for a producer id -> a broker without it (the
   embedded one answers aiokafka's InitProducerId v0 with UnknownError).

All servers are tried at once, within PROCESSOR_REQUEST_TIMEOUT_MS; when none passes, the
failure that got furthest is reported, and a server that stops answering is reported with
the step it was waiting on.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from aiokafka.protocol.admin import SaslHandShakeRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.transaction import InitProducerIdRequest

from processor.config import Settings, env_name, flag_name
from processor.errors import (
    AuthenticationFailedError,
    BrokerUnavailableError,
    ConfigError,
    ProcessorError,
    TlsHandshakeError,
)
from processor.kafka.clients import make_producer, security_options

#: The topic settings of ``processor run``; ``processor sample`` needs only the input.
RUN_TOPICS = ("input_topic", "output_topic", "dlq_topic")
_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION


class Step(IntEnum):
    """How far a server got; the furthest failure is the most telling."""

    REACH = 1
    CONNECT = 2
    LOG_IN = 3
    TOPICS = 4
    IDEMPOTENCE = 5


class _Failed(Exception):  # noqa: N818 - internal: carries the error and how far it got
    def __init__(self, step: Step, error: ProcessorError) -> None:
        super().__init__(str(error))
        self.step = step
        self.error = error


async def check_cluster(settings: Settings, topics: Sequence[str] = RUN_TOPICS) -> None:
    """Return once a bootstrap server lets the processor in and has the ``topics`` (names
    of topic settings); else raise the one-line error of the furthest failure."""
    servers = [
        _Server(settings, host, port, topics)
        for host, port, _ in collect_hosts(settings.bootstrap_servers, randomize=False)
    ]
    tasks = [asyncio.create_task(server.check()) for server in servers]
    failures: list[_Failed] = []
    try:
        async with asyncio.timeout(settings.request_timeout_ms / 1000):
            for next_done in asyncio.as_completed(tasks):
                try:
                    await next_done
                except _Failed as failure:
                    failures.append(failure)
                else:
                    return
    except TimeoutError:
        failures += [
            server.silent() for server, task in zip(servers, tasks, strict=True) if not task.done()
        ]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    raise max(failures, key=lambda failure: failure.step).error


def run_topics(settings: Settings) -> tuple[str, ...]:
    """The topic settings ``processor run`` needs: :data:`RUN_TOPICS`, and the aggregates
    topic when windows are on (their changelog the processor creates itself)."""
    return RUN_TOPICS if settings.window is None else (*RUN_TOPICS, "aggregates_topic")


def unreachable(settings: Settings, reason: str) -> BrokerUnavailableError:
    return BrokerUnavailableError(
        f"cannot reach {_setting('bootstrap_servers')} {settings.bootstrap_servers!r}: {reason}"
    )


async def checked_producer(settings: Settings, topics: Sequence[str]) -> Any:
    """A started producer, once :func:`check_cluster` passed for ``topics``; a cluster lost
    in between is the same one line as one never reached."""
    await check_cluster(settings, topics)
    producer = make_producer(settings)
    try:
        await producer.start()
    except KafkaConnectionError:  # the check passed a moment ago: the cluster went away
        await producer.stop()
        raise unreachable(settings, "lost while the producer started") from None
    except BaseException:
        await producer.stop()
        raise
    return producer


class _Server:
    """One bootstrap server taken through the steps; remembers what it is waiting on."""

    def __init__(self, settings: Settings, host: str, port: int, topics: Sequence[str]) -> None:
        self.settings = settings
        self.topics = topics
        self.host = host
        self.port = port
        self.where = f"{host}:{port}"
        self.step = Step.REACH
        self.waiting = "the TCP connection"

    def silent(self) -> _Failed:
        """The failure of a server that stopped answering at the step it was on."""
        settings = self.settings
        within = f"within {_setting('request_timeout_ms')} {settings.request_timeout_ms}"
        if self.step is Step.REACH:
            return _Failed(self.step, unreachable(settings, f"{self.where}: no answer {within}"))
        hint = ""
        if self.waiting == "the TLS handshake":
            hint = f" (a listener without TLS? check {_setting('security_protocol')})"
        return _Failed(
            self.step,
            BrokerUnavailableError(
                f"{self.where} accepted the connection but did not answer {self.waiting} "
                f"{within}{hint}"
            ),
        )

    async def check(self) -> None:
        settings = self.settings
        await self._reach()
        options = security_options(settings)
        transport = {k: v for k, v in options.items() if not k.startswith("sasl_")}
        transport["security_protocol"] = "SSL" if settings.uses_tls else "PLAINTEXT"
        self._enter(Step.CONNECT, "the TLS handshake" if settings.uses_tls else "ApiVersions")
        conn = await self._connect(transport)
        try:
            if settings.uses_sasl:
                self._enter(Step.LOG_IN, "the SASL handshake")
                await self._check_mechanism(conn)
                conn.close()
                self.waiting = "the SASL login"
                conn = await self._log_in(options)
            self._enter(Step.TOPICS, "a metadata request")
            await self._check_topics(conn)
            if settings.enable_idempotence:
                self._enter(Step.IDEMPOTENCE, "InitProducerId")
                await self._check_idempotence(conn)
        finally:
            conn.close()

    def _enter(self, step: Step, waiting: str) -> None:
        self.step = step
        self.waiting = waiting

    async def _reach(self) -> None:
        try:
            _, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            reason = f"{self.where}: {_why(exc)}"
            raise _Failed(Step.REACH, unreachable(self.settings, reason)) from None
        writer.close()

    async def _connect(self, options: dict[str, Any]) -> Any:
        settings = self.settings
        try:
            return await self._open(options)
        except ssl.SSLError as exc:
            raise _Failed(Step.CONNECT, self._tls_failed(exc)) from None
        except (OSError, TimeoutError, KafkaError) as exc:
            protocol = f"{_setting('security_protocol')} {settings.security_protocol}"
            tls = "with" if settings.uses_tls else "without"
            why = (
                "closed the connection before answering"
                if isinstance(exc, KafkaConnectionError)
                else f"failed the first Kafka request ({_why(exc)})"
            )
            raise _Failed(
                Step.CONNECT,
                BrokerUnavailableError(
                    f"{self.where} {why}: is it a Kafka listener {tls} TLS, as {protocol} says?"
                ),
            ) from None

    async def _check_mechanism(self, conn: Any) -> None:
        """Ask for the mechanism alone: a broker that refuses it closes the connection or
        lists what it offers, and either way the password is not the problem."""
        mechanism = self.settings.sasl_mechanism
        check = f"check {_setting('sasl_mechanism')}"
        try:
            answer = await conn.send(SaslHandShakeRequest(mechanism))
        except KafkaError as exc:
            why = "closed the connection" if isinstance(exc, KafkaConnectionError) else str(exc)
            reason = f"{self.where} refused SASL mechanism {mechanism} ({why})"
            raise _Failed(Step.LOG_IN, _refused(f"{reason}; {check}")) from None
        offered = ", ".join(answer.enabled_mechanisms or []) or "none"
        if answer.error_code:
            name = for_code(answer.error_code).__name__
            reason = f"{self.where} refused SASL mechanism {mechanism} ({name}; it lists {offered})"
            raise _Failed(Step.LOG_IN, _refused(f"{reason}; {check}"))
        if mechanism not in (answer.enabled_mechanisms or []):
            reason = f"{self.where} does not offer SASL mechanism {mechanism} (only {offered})"
            raise _Failed(Step.LOG_IN, _refused(f"{reason}; {check}"))

    async def _log_in(self, options: dict[str, Any]) -> Any:
        settings = self.settings
        try:
            return await self._open(options)
        except KafkaConnectionError:
            reason = "closed the connection during the login"
        except KafkaError as exc:
            reason = str(exc)
        except (OSError, TimeoutError) as exc:
            reason = _why(exc)
        except (KeyError, ValueError, AssertionError):
            # aiokafka's SCRAM and PLAIN clients fail this way when the server's answer is
            # an error (``e=...``) instead of the proof of a successful login.
            reason = "the server answered the login with an error"
        raise _Failed(
            Step.LOG_IN,
            _refused(
                f"{self.where} rejected the login ({reason}): check the user "
                f"{_setting('sasl_username')} {settings.sasl_username!r}, its password, "
                f"{_setting('sasl_mechanism')} {settings.sasl_mechanism} and "
                f"{_setting('security_protocol')} {settings.security_protocol}"
            ),
        )

    async def _check_topics(self, conn: Any) -> None:
        """The topics exist (asked without creating them: a misspelt topic must not be made)."""
        settings = self.settings
        names = {name: getattr(settings, name) for name in self.topics}
        topics = list(dict.fromkeys(names.values()))
        try:
            answer = await conn.send(MetadataRequest(topics, allow_auto_topic_creation=False))
        except KafkaError as exc:
            if isinstance(exc, KafkaConnectionError) and not settings.uses_sasl:
                raise _Failed(
                    Step.TOPICS,
                    AuthenticationFailedError(
                        f"{self.where} closed the connection at the first request after "
                        f"connecting: it may want a SASL login; check "
                        f"{_setting('security_protocol')} {settings.security_protocol}"
                    ),
                ) from None
            reason = f"{self.where}: metadata request failed ({_why(exc)})"
            raise _Failed(Step.TOPICS, unreachable(settings, reason)) from None
        codes = {topic[1]: topic[0] for topic in answer.topics}
        problems = [
            f"invalid setting {_setting(name)}: topic {topic!r} {_topic_problem(codes[topic])}"
            for name, topic in names.items()
            if codes.get(topic)
        ]
        if problems:
            raise _Failed(Step.TOPICS, ConfigError("; ".join(problems)))

    async def _check_idempotence(self, conn: Any) -> None:
        """Ask for a producer id as the idempotent producer will: without this, a broker that
        refuses it fails the producer's start with a bare ``UnknownError`` traceback."""
        try:
            answer = await conn.send(InitProducerIdRequest(None, 60_000))
        except KafkaError as exc:
            reason = f"{type(exc).__name__}"
        else:
            if not answer.error_code:
                return
            reason = for_code(answer.error_code).__name__
        raise _Failed(
            Step.IDEMPOTENCE,
            ConfigError(
                f"invalid setting {_setting('enable_idempotence')}: {self.where} refused the "
                f"idempotent producer (InitProducerId: {reason}); for a broker without it, "
                f"such as the embedded one, set {env_name('enable_idempotence')}=false "
                f"({flag_name('enable_idempotence')} false)"
            ),
        )

    async def _open(self, options: dict[str, Any]) -> Any:
        return await create_conn(
            self.host,
            self.port,
            client_id=self.settings.client_id,
            request_timeout_ms=self.settings.request_timeout_ms,
            **options,
        )

    def _tls_failed(self, exc: ssl.SSLError) -> TlsHandshakeError:
        settings = self.settings
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        files = ", ".join(
            f"{_setting(name)} {getattr(settings, name) or '(unset)'}"
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        )
        return TlsHandshakeError(
            f"TLS handshake with {self.where} failed ({reason}): check {files} and "
            f"{_setting('security_protocol')} {settings.security_protocol}"
        )


def _topic_problem(code: int) -> str:
    if code == _UNKNOWN_TOPIC:
        return "does not exist (create it first: the processor does not create topics)"
    return f"cannot be used: {for_code(code).__name__}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _refused(message: str) -> AuthenticationFailedError:
    return AuthenticationFailedError(f"authentication failed: {message}")


def _setting(name: str) -> str:
    return f"{env_name(name)} ({flag_name(name)})"
