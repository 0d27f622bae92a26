"""The README is the front door: it must name every setting's environment variable, and the test command CI runs."""

from pathlib import Path

from kloyst import core_plugin
from kloyst.config import CORE_SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_core_and_first_party_setting_and_its_environment_variable_is_in_the_readme():
    from kloyst_plugins.imports import plugin as imports_plugin

    settings = list(CORE_SETTINGS) + core_plugin.kloyst_settings() + imports_plugin.kloyst_settings()
    missing = [s.env for s in settings if f"`{s.env}`" not in README]
    assert missing == [], f"document these environment variables in the README's settings table: {missing}"


def test_ci_runs_exactly_the_readmes_test_command():
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines()
                if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
    assert "make test" in README and "make run" in README
