"""The example plugin as a package: entry points, hook implementations, migration branch, CLI command."""

from __future__ import annotations

import argparse
import os

import pytest
from alembic import command
from sqlalchemy import inspect as sa_inspect

from kloyst import testing
from kloyst.db import make_engine, migrate
from kloyst.plugins import build_plugin_manager, hookspecs
from kloyst.plugins.manager import installed_entry_points


@pytest.fixture(scope="module")
def pm():
    return build_plugin_manager()


def test_both_plugins_come_from_the_entry_point_group(pm):
    eps = {ep.name: ep.value for ep in installed_entry_points()}
    assert eps["example"] == "kloyst_example.plugin"
    assert eps["example_digest"] == "kloyst_example.digest_plugin"
    assert list(pm.infos).index("example") < list(pm.infos).index("example_digest")


def test_every_hook_the_example_implements_is_a_kloyst_hookspec_or_its_own(pm):
    from kloyst_example import hookspecs as example_hookspecs

    for name in ("example", "example_digest"):
        hooks = {caller.name for caller in pm.get_hookcallers(pm.get_plugin(name))}
        assert hooks, name
        assert all(hasattr(hookspecs, hook) or hasattr(example_hookspecs, hook) for hook in hooks), hooks
    assert {caller.name for caller in pm.get_hookcallers(pm.get_plugin("example"))} == {
        "kloyst_settings", "kloyst_routes", "kloyst_tasks", "kloyst_cli_commands", "kloyst_addhooks",
        "kloyst_event_types", "kloyst_vendor_event", "kloyst_merge_strategies", "kloyst_pricing_rules"}
    assert {caller.name for caller in pm.get_hookcallers(pm.get_plugin("example_digest"))} == {
        "kloyst_routes", "kloyst_example_import_note"}


def test_the_example_migrations_are_found_beside_its_module_without_a_hook(pm):
    from kloyst_example import plugin

    assert ("example", plugin.MIGRATIONS) in migrate.migration_dirs(pm)


def test_the_example_migration_branch_is_at_head_in_the_test_database(registry):
    pm, engine = registry["kloyst.plugin_manager"], registry["kloyst.engine"]
    assert "ex_0001" in migrate.heads(pm, engine)
    assert "ex_0001" in migrate.current(pm, engine)
    assert {"example_note", "example_event_log"} <= set(sa_inspect(engine).get_table_names())


def test_the_example_branch_downgrades_alone_and_upgrades_again(pm):
    name = f"kloyst_example_branch_{os.getpid()}"
    url = testing.create_database(name)
    engine = make_engine(url)
    try:
        migrate.upgrade(pm, engine)
        with engine.begin() as connection:
            command.downgrade(migrate.alembic_config(pm, url, connection), "example@base")
        tables = set(sa_inspect(engine).get_table_names())
        assert "example_note" not in tables and "example_event_log" not in tables
        assert "vendor" in tables  # the core stays where it was
        migrate.upgrade(pm, engine)
        assert migrate.current(pm, engine) == migrate.heads(pm, engine)
        assert migrate.model_drift(pm, engine) == []
    finally:
        engine.dispose()
        testing.drop_database(name)


def test_example_adds_its_cli_command(pm):
    from kloyst_example import cli

    parser = argparse.ArgumentParser(prog="kloyst")
    pm.for_plugins("kloyst_cli_commands", ["example"])(subparsers=parser.add_subparsers(dest="command"))

    args = parser.parse_args(["example-stats", "development.ini"])

    assert args.handler is cli.cmd_stats
    assert args.ini == "development.ini"
