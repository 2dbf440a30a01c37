"""Command-line flags generated from the settings model.

Each command gets only the settings it uses (``COMMAND_SETTINGS``, the one place that
decides it), and each flag's help is read from ``Settings``: what it means, its default (or
what happens when it is unset), its choices and its environment variable. The flags stay
strings: ``processor.config`` does the parsing and the checking.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo

from processor.config import UNSET, Settings, env_name, flag_name
from processor.durations import format_ms, is_duration

CONNECTION = (
    "bootstrap_servers",
    "client_id",
    "request_timeout_ms",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
)
PRODUCER = ("enable_idempotence", "acks", "compression_type", "linger_ms", "max_batch_bytes")
TOPICS = ("input_topic", "output_topic", "dlq_topic")
LOGS = ("log_level", "log_format")

#: The settings each command reads; its flags are these and no others.
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "run": tuple(Settings.model_fields),
    "config": tuple(Settings.model_fields),
    "sample": (*CONNECTION, "input_topic", *PRODUCER, *LOGS),
    "broker": TOPICS,
}


def add_setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One ``--flag`` per setting ``command`` uses, and ``--config`` for the TOML file."""
    group = parser.add_argument_group(
        "settings", "each also a PROCESSOR_* environment variable or a key of the --config file"
    )
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file of settings, one key per setting, named as the setting "
        '(bootstrap_servers = "h:9092"); flags and env vars win over it '
        "[unset: PROCESSOR_CONFIG_FILE, else none]",
    )
    for name in COMMAND_SETTINGS[command]:
        group.add_argument(
            flag_name(name),
            dest=f"setting_{name}",
            metavar=name.upper(),
            help=describe(name).replace("%", "%%"),
        )


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        name: getattr(args, f"setting_{name}")
        for name in Settings.model_fields
        if getattr(args, f"setting_{name}", None) is not None
    }


def describe(name: str) -> str:
    """One line: the meaning, then [choices; default or what unset means; env var]."""
    field = Settings.model_fields[name]
    facts = []
    choices = choices_of(field)
    if choices:
        facts.append("choices: " + ", ".join(choices))
    facts.append(default_text(name, field))
    facts.append(f"env {env_name(name)}")
    return f"{field.description} [{'; '.join(facts)}]"


def default_text(name: str, field: FieldInfo) -> str:
    if field.default is None or field.default_factory is not None:
        return f"unset: {UNSET[name]}"
    if is_duration(field):
        return f"default {format_ms(field.default)}"
    return f"default {show(field.default)}"


def show(value: object) -> str:
    """A value as an operator types it (``false``, not ``False``, ``a,b``, not a tuple)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def choices_of(field: FieldInfo) -> list[str]:
    """The allowed values of a ``Literal`` (or ``bool``) setting, optional or not."""
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if annotation is bool:
        return ["true", "false"]
    if typing.get_origin(annotation) is Literal:
        return [str(arg) for arg in typing.get_args(annotation)]
    return []
