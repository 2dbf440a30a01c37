"""The README documents every setting, so the table cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.config import Settings, env_name, flag_name

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme_table(name: str) -> None:
    start = f"| `{env_name(name)}` |"
    row = next((line for line in README.splitlines() if line.startswith(start)), "")
    assert row, f"{env_name(name)} is not in the README's configuration table"
    assert f"`{flag_name(name)}`" in row
