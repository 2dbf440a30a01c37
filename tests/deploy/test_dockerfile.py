"""The Dockerfile and .dockerignore, read as text (no Docker engine needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SPILL_DIR = "/var/lib/processor/spill"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "python3-dev", "libc6-dev", "curl", "wget")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    result = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def args_defaults() -> dict[str, str]:
    defaults = {}
    for keyword, rest in instructions():
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = value
    return defaults


def resolve(text: str) -> str:
    defaults = args_defaults()
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), text)


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def values(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in stage if kw == keyword]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for rest in values(stage, "ENV"):
        for item in shlex.split(rest):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def test_multi_stage_build_on_python_311_slim() -> None:
    found = stages()
    assert len(found) >= 2
    builder, final = found[0], found[-1]
    assert resolve(values(builder, "FROM")[0]).split()[0] == "python:3.11-slim"
    assert resolve(values(final, "FROM")[0]).split()[0] == "python:3.11-slim"
    build = " ".join(values(builder, "RUN"))
    assert "pip wheel" in build, "the builder builds a wheel"
    assert "python -m venv /opt/venv" in build
    copies = values(final, "COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"], "only the venv reaches the image"


def test_the_image_gets_every_kafka_codec() -> None:
    # Producers choose the compression: the image must decode snappy, lz4 and zstd too.
    # aiokafka's extras bring cramjam; the builder installs the wheel with its dependencies.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (aiokafka,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "aiokafka"]
    assert {"snappy", "lz4", "zstd"} <= aiokafka.extras
    build = " && ".join(values(stages()[0], "RUN"))
    (install,) = [step for step in build.split("&&") if "/opt/venv/bin/pip install" in step]
    assert "${wheel}" in install
    assert "--no-deps" not in install


def test_final_stage_has_no_build_tools_or_sources() -> None:
    final = final_stage()
    run = " ".join(values(final, "RUN"))
    assert "apt-get" not in run
    assert "pip install" not in run
    for tool in BUILD_TOOLS:
        assert not re.search(rf"\b{re.escape(tool)}\b", run), tool
    assert not any("processor" in c.split()[0] for c in values(final, "COPY") if c)


def test_runs_as_a_numeric_non_root_user() -> None:
    (user,) = values(final_stage(), "USER")
    uid, _, gid = resolve(user).partition(":")
    assert uid.isdigit(), "runAsNonRoot can only verify a numeric UID"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0


def test_entrypoint_and_cmd() -> None:
    final = final_stage()
    assert json.loads(values(final, "ENTRYPOINT")[-1]) == ["processor"]
    assert json.loads(values(final, "CMD")[-1]) == ["run"]
    assert values(final, "STOPSIGNAL") == ["SIGTERM"]


def test_spill_directory_is_a_volume() -> None:
    final = final_stage()
    assert json.loads(values(final, "VOLUME")[-1]) == [SPILL_DIR]
    env = env_of(final)
    assert env["PROCESSOR_SPILL_DIR"] == SPILL_DIR
    assert "/opt/venv/bin" in env["PATH"]
    assert any(SPILL_DIR in run and "chown" in run for run in values(final, "RUN"))


def test_healthcheck_uses_urllib_on_healthz() -> None:
    (healthcheck,) = values(final_stage(), "HEALTHCHECK")
    _, _, exec_form = healthcheck.partition("CMD ")
    command = json.loads(exec_form)
    assert command[:2] == ["python", "-c"]
    compile(command[2], "healthcheck", "exec")
    assert "urllib.request" in command[2]
    assert "/healthz" in command[2]
    assert "PROCESSOR_HTTP_PORT" in command[2]
    assert "curl" not in healthcheck


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "processor/config.py"])
def test_dockerignore_keeps_what_the_build_copies(path: str) -> None:
    assert not ignored(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "tests/unit/x.py",
        ".git/HEAD",
        "spill/0.jsonl",
        "processor/__pycache__/a.pyc",
        "helm/geo-stream-processor/Chart.yaml",
    ],
)
def test_dockerignore_drops_everything_else(path: str) -> None:
    assert ignored(path)


def test_every_copied_source_exists_or_is_the_readme() -> None:
    builder = stages()[0]
    for copy in values(builder, "COPY"):
        *sources, _ = copy.split()
        for source in sources:
            # README.md is the package's readme (pyproject), written with the docs.
            assert (ROOT / source).exists() or source == "README.md", source


def ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    result = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = prefixes + parts if raw.strip().lstrip("!").startswith("**/") else prefixes
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            result = not negate
    return result
