"""A plugin says which Kloyst versions it was made for, and start-up holds it to that, in one line."""

from __future__ import annotations

import importlib.metadata
import logging
import re
import types
from pathlib import Path

import pytest
from kloyst_example import digest_plugin
from kloyst_example import plugin as example_plugin

from kloyst.config import ConfigurationError
from kloyst.plugins import PluginMeta
from kloyst.plugins.manager import KloystPluginManager, build_plugin_manager, check_compatible
from kloyst.version import __version__

REPO = Path(__file__).resolve().parents[2]


def plugin(**meta) -> types.ModuleType:
    module = types.ModuleType("a_third_party_plugin")
    module.plugin_meta = PluginMeta(description="made elsewhere", **meta)
    return module


def test_the_version_is_said_once_in_the_code_and_the_same_in_setup_py_and_the_installed_metadata():
    declared = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    assert declared == __version__ == importlib.metadata.version("kloyst")
    assert f"## {__version__} " in (REPO / "CHANGELOG.md").read_text()


def test_a_plugin_made_for_other_kloyst_versions_is_refused_at_start_up_in_one_line():
    with pytest.raises(ConfigurationError) as refused:
        build_plugin_manager([("old_rules", plugin(kloyst_versions=">=0.1,<0.2"))])
    message = str(refused.value)
    assert message == (f"plugin 'old_rules' supports Kloyst <0.2,>=0.1, not {__version__}: install a release of "
                       f"old_rules made for Kloyst {__version__}")
    assert "\n" not in message


def test_a_range_that_is_not_a_version_range_is_refused_naming_the_plugin():
    with pytest.raises(ConfigurationError, match=r"plugin 'typo': kloyst_versions 'version 2' is not a version range"):
        build_plugin_manager([("typo", plugin(kloyst_versions="version 2"))])


def test_a_plugin_whose_range_includes_this_version_loads_and_says_its_range():
    pm = build_plugin_manager([("current", plugin(kloyst_versions=f">={__version__},<1"))])
    assert pm.infos["current"].as_json()["kloyst_versions"] == f">={__version__},<1"


def test_a_third_party_plugin_that_says_nothing_loads_with_a_warning_and_kloysts_own_without(caplog):
    with caplog.at_level(logging.WARNING, logger="kloyst.plugins.manager"):
        check_compatible("silent", PluginMeta(), "someone-elses-plugins")
        check_compatible("contacts", PluginMeta(), "kloyst")
    assert [r.getMessage() for r in caplog.records] == [
        "plugin 'silent' (someone-elses-plugins) does not say which Kloyst versions it supports "
        "(PluginMeta.kloyst_versions)"]
    KloystPluginManager().add_plugin("silent", plugin(), version="1.0", distribution="someone-elses-plugins")


def test_the_example_plugins_declare_the_range_they_ask_pip_for_and_it_includes_this_version():
    setup = (REPO / "examples" / "kloyst-example-plugin" / "setup.py").read_text()
    required = re.search(r'install_requires=\["kloyst([^"]*)"\]', setup).group(1)
    for module in (example_plugin, digest_plugin):
        assert module.plugin_meta.kloyst_versions == required
    check_compatible("example", example_plugin.plugin_meta, "kloyst-example-plugin")
