"""Where the settings come from, highest priority first: command-line flags, ``PROCESSOR_*``
environment variables, a TOML file (``--config`` / ``PROCESSOR_CONFIG_FILE``), the profile,
defaults; and what a bad one says: a ``ConfigError`` whose one line names the variable, the
flag, or the file and key. The settings themselves are :class:`processor.config.Settings`.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from processor.config import ENV_PREFIX, PROFILES, Settings, env_name, flag_name
from processor.errors import ConfigError
from processor.qc.profiles import PROFILE_QC


def _describe(error: ValidationError, sources: dict[str, str]) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    message = str(first["msg"])
    field = loc[0] if loc else ""
    if not field and ": " in message:  # model-level check: "Value error, field: why"
        field, message = message.removeprefix("Value error, ").split(": ", 1)
    if field == "qc" and message.startswith("Value error, qc"):  # "qc.<field>.<key>: why"
        field, message = message.removeprefix("Value error, ").split(": ", 1)
    root = field.split(".", 1)[0]
    if root != field and root in Settings.model_fields:  # a key of a table: name it
        source = sources.get(root, "")
        where = f" in {source.removeprefix('file ')}" if source.startswith("file ") else ""
        return f"invalid setting {field}{where} ({env_name(root)}, {flag_name(root)}): {message}"
    if field not in Settings.model_fields:
        return f"invalid setting {field or '?'}: {message}"
    source = sources.get(field, "")
    if source.startswith("file "):  # name the key where the operator will look for it
        where = f"{field} in {source.removeprefix('file ')}"
        return f"invalid setting {where} ({env_name(field)}, {flag_name(field)}): {message}"
    return f"invalid setting {env_name(field)} ({flag_name(field)}): {message}"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"invalid setting {ENV_PREFIX}CONFIG_FILE (--config): {path}: {exc}"
        ) from None
    values = {key.replace("-", "_"): value for key, value in data.items()}
    for key in values:
        if key not in Settings.model_fields:
            hint = _did_you_mean(key, Settings.model_fields)
            raise ConfigError(f"invalid setting {key} in {path}: not a setting{hint}")
    return values


def _did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean X?)`` for the closest of ``known``, compared without a ``prefix``
    that they all share (or everything looks alike); empty when nothing is close."""
    stems = [item.removeprefix(prefix) for item in known]
    match = difflib.get_close_matches(name.removeprefix(prefix), stems, n=1, cutoff=0.6)
    return f" (did you mean {prefix}{match[0]}?)" if match else ""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Warnings for ``PROCESSOR_*`` variables that are no setting: the settings ignore them,
    so a misspelt one would otherwise go unnoticed."""
    known = [env_name(name) for name in [*Settings.model_fields, "config_file"]]
    return [
        f"{name} is not a setting and is ignored{_did_you_mean(name.upper(), known, ENV_PREFIX)}"
        for name in sorted(environ)
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    ]


def load_settings(
    overrides: dict[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Build settings from flags (``overrides``), env and an optional TOML file."""
    return resolve_settings(overrides, config_file)[0]


def resolve_settings(
    overrides: dict[str, Any] | None = None, config_file: Path | None = None
) -> tuple[Settings, dict[str, str]]:
    """The settings and, for each, where its value came from: ``flag --x``, ``env
    PROCESSOR_X``, ``file <path>``, ``profile <name>`` or ``default``."""
    env_file = os.environ.get(ENV_PREFIX + "CONFIG_FILE")
    path = config_file or (Path(env_file) if env_file else None)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    from_env = {name for name in Settings.model_fields if env_name(name) in os.environ}
    # Environment beats the file: drop file keys that the environment sets.
    from_file = {k: v for k, v in (_read_file(path) if path else {}).items() if k not in from_env}
    sources = dict.fromkeys(from_file, f"file {path}")
    sources.update({name: f"env {env_name(name)}" for name in from_env})
    sources.update({name: f"flag {flag_name(name)}" for name in flags})
    try:
        settings = Settings(**{**from_file, **flags})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None
    preset = {
        **PROFILES.get(settings.profile or "", {}),
        "qc": PROFILE_QC.get(settings.profile or ""),
    }
    for name in Settings.model_fields:
        if name not in sources:
            sources[name] = f"profile {settings.profile}" if preset.get(name) else "default"
    return settings, sources
