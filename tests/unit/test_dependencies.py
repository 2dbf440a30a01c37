"""Every dependency pyproject.toml declares is used: imported (or located through importlib)
somewhere in processor/, tests/ or bench/, or, for a tool, its command run by the Makefile or
the benchmark. A declared-but-unused package costs every install and every audit; this
catches the next one."""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("processor", "tests", "bench")
#: Tools, by the command they install.
COMMANDS = {"mypy": "mypy", "ruff": "ruff", "import-linter": "lint-imports", "py-spy": "py-spy"}
#: Packages used without an import statement or a command, and how.
USED_OTHERWISE = {
    "pytest-asyncio": "a pytest plugin, switched on by asyncio_mode in pyproject.toml",
    "opentelemetry-exporter-otlp-proto-http": "loaded by OpenTelemetry's entry points "
    "(OTEL_TRACES_EXPORTER=otlp), processor.telemetry.otel names it",
}
_LOCATORS = {"files", "import_module", "distribution", "version"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match[0]).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {_name(r) for r in project["dependencies"]}
    names |= {_name(r) for requirements in extras.values() for r in requirements}
    return names - {_name(project["name"])}


def referenced(source: str) -> set[str]:
    """Modules a source file imports, and names it hands to importlib (``files("x")``,
    ``import_module("x")``, ``metadata.distribution("x")``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and node.args:
            func, first = node.func, node.args[0]
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in _LOCATORS and isinstance(first, ast.Constant):
                found.add(str(first.value))
    return found


@cache
def used_names() -> frozenset[str]:
    names: set[str] = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            names |= referenced(path.read_text())
    return frozenset(names)


def provided(distribution: str) -> set[str]:
    """The modules a distribution installs (``opentelemetry.sdk``, not the namespace
    ``opentelemetry`` it shares with others), and its own name."""
    modules = {distribution}
    for file in metadata.files(distribution) or []:
        parts = file.parts
        if file.suffix != ".py" or ".." in parts or parts[0].endswith((".dist-info", ".data")):
            continue
        dotted = list(parts[:-1]) + ([] if file.stem == "__init__" else [file.stem])
        if dotted:
            modules.add(".".join(dotted))
    return modules


@cache
def command_text() -> str:
    """Where a tool's command would be run: the Makefile and the sources."""
    texts = [(ROOT / "Makefile").read_text()]
    texts += [path.read_text() for folder in SOURCES for path in (ROOT / folder).rglob("*.py")]
    return "\n".join(texts)


def is_used(name: str, used: frozenset[str]) -> bool:
    if name in USED_OTHERWISE:
        return True
    if name in COMMANDS:
        return (
            re.search(rf"(^|[\s/\"']){re.escape(COMMANDS[name])}\b", command_text(), re.M)
            is not None
        )
    if name.startswith("types-"):  # type stubs: used while the package they describe is
        return is_used(name.removeprefix("types-"), used)
    return bool(provided(name) & used)


def unused(declared_names: set[str], used: frozenset[str]) -> list[str]:
    return sorted(name for name in declared_names if not is_used(name, used))


def test_every_declared_dependency_is_used() -> None:
    assert unused(declared(), used_names()) == []


def test_a_declared_package_nothing_imports_is_caught() -> None:
    # Installed wherever the project is (pyproj requires certifi, pandas python-dateutil),
    # and nothing here imports either; msgspec is imported by the JSON logs.
    candidates = {"certifi", "python-dateutil", "types-python-dateutil", "msgspec"}
    found = unused(candidates, used_names())
    assert found == ["certifi", "python-dateutil", "types-python-dateutil"]


def test_a_tool_counts_while_its_command_runs() -> None:
    assert unused({"mypy", "py-spy"}, used_names()) == []


def test_a_shared_namespace_does_not_count_for_every_package_in_it() -> None:
    # The SDK is used through opentelemetry.sdk; importing opentelemetry.metrics (the API)
    # alone would not keep it.
    assert unused({"opentelemetry-sdk"}, frozenset({"opentelemetry", "opentelemetry.metrics"})) == [
        "opentelemetry-sdk"
    ]
    assert unused({"opentelemetry-api"}, frozenset({"opentelemetry.metrics"})) == []


def test_the_exceptions_are_declared_ones() -> None:
    assert USED_OTHERWISE.keys() | COMMANDS.keys() <= declared()


def test_no_extra_repeats_a_core_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    repeated = {
        extra: sorted(core & {_name(r) for r in requirements})
        for extra, requirements in project["optional-dependencies"].items()
    }
    assert {extra: names for extra, names in repeated.items() if names} == {}
