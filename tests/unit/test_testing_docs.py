"""docs/testing_plugins.md documents every fixture Kloyst's pytest plugin gives a plugin author, and the
test database's name can be chosen."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kloyst import testing
from kloyst.testing import pytest_plugin

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing_plugins.md"


def fixtures_of_the_plugin() -> set[str]:
    """The public fixtures the plugin defines (pytest marks each with its fixture marker)."""
    return {name for name, value in vars(pytest_plugin).items()
            if not name.startswith("_") and hasattr(value, "_fixture_function_marker")}


def test_every_fixture_of_the_pytest_plugin_is_in_the_fixture_table():
    table = "\n".join(line for line in DOC.read_text().splitlines() if line.startswith("| `"))
    documented = set(re.findall(r"`([a-z_]+)`", table))
    fixtures = fixtures_of_the_plugin()
    assert len(fixtures) > 20
    assert sorted(fixtures - documented) == []


def test_the_test_database_prefix_comes_from_the_environment_and_must_name_a_database(monkeypatch):
    monkeypatch.delenv("KLOYST_TEST_DATABASE_PREFIX", raising=False)
    assert testing.database_prefix() == "kloyst_test"
    monkeypatch.setenv("KLOYST_TEST_DATABASE_PREFIX", "acme_plugin_test")
    assert testing.database_prefix() == "acme_plugin_test"
    for bad in ("Acme", "1abc", "drop table;", "a" * 41, ""):
        monkeypatch.setenv("KLOYST_TEST_DATABASE_PREFIX", bad)
        with pytest.raises(ValueError, match="KLOYST_TEST_DATABASE_PREFIX"):
            testing.database_prefix()
