"""The README documents every setting and every dead-letter code, so its tables cannot drift
from the code, and the project cites no document it does not carry."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from processor.config import Settings, env_name, flag_name
from processor.messages.codec import DeadLetterCode

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme_table(name: str) -> None:
    start = f"| `{env_name(name)}` |"
    row = next((line for line in README.splitlines() if line.startswith(start)), "")
    assert row, f"{env_name(name)} is not in the README's configuration table"
    assert f"`{flag_name(name)}`" in row


@pytest.mark.parametrize("code", list(DeadLetterCode))
def test_every_dead_letter_code_is_in_the_readme_table(code: DeadLetterCode) -> None:
    assert any(line.startswith(f"| `{code.value}` |") for line in README.splitlines())


ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".txt", ".tpl", ".json", ""}
MD_NAME = re.compile(r"[\w./-]*\w\.md\b")


def _project_files() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    return [ROOT / name for name in tracked if name and (ROOT / name).is_file()]


def test_the_project_cites_no_document_it_does_not_carry() -> None:
    """Every *.md a file names exists in the repository (or is a file the code writes)."""
    files = _project_files()
    carried = {p.name for p in files if p.suffix == ".md"}
    written = {
        name
        for p in files
        if p.suffix == ".py"
        for name in re.findall(r"[\"']([\w.-]+\.md)[\"']", p.read_text(errors="replace"))
    }
    missing = {
        f"{p.relative_to(ROOT)}: {name}"
        for p in files
        if p.suffix in TEXT_SUFFIXES
        for name in MD_NAME.findall(p.read_text(errors="replace"))
        if Path(name).name not in carried | written
    }
    assert not missing, sorted(missing)


def test_relative_links_of_the_markdown_files_resolve() -> None:
    broken = {
        f"{p.relative_to(ROOT)}: {target}"
        for p in _project_files()
        if p.suffix == ".md"
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", p.read_text())
        if "://" not in target and not (p.parent / target).exists()
    }
    assert not broken, sorted(broken)
