"""The schema comes from the migrations, and the migrations describe exactly the models."""

from kloyst.db import migrate


def test_models_and_migrations_agree(registry):
    drift = migrate.model_drift(registry["kloyst.plugin_manager"], registry["kloyst.engine"])
    assert drift == [], "models and migrations disagree; generate a revision:\n" + "\n".join(map(repr, drift))


def test_test_database_is_at_every_head(registry):
    pm, engine = registry["kloyst.plugin_manager"], registry["kloyst.engine"]
    assert migrate.current(pm, engine) == migrate.heads(pm, engine)


def test_every_installed_plugin_migration_dir_is_in_alembic_config(registry):
    pm = registry["kloyst.plugin_manager"]
    cfg = migrate.alembic_config(pm, "postgresql://unused")
    locations = cfg.get_main_option("version_locations").split()
    assert locations[0] == str(migrate.CORE_VERSIONS)
    for _, directory in migrate.migration_dirs(pm):
        assert str(directory) in locations
    for _, directory in pm.collect("kloyst_migration_dirs"):  # the optional hook, for revisions kept elsewhere
        assert str(__import__("pathlib").Path(directory).resolve()) in locations


def test_every_first_party_plugins_migrations_are_found_beside_its_module_without_a_hook(registry):
    from pathlib import Path

    pm = registry["kloyst.plugin_manager"]
    found = dict(migrate.migration_dirs(pm))
    for name in ("contacts", "imports", "waba", "templates", "messages", "wallet", "pricing", "campaigns"):
        assert found[name] == Path(pm.module_of(name).__file__).resolve().parent / "migrations" / "versions"
        assert pm.for_plugins("kloyst_migration_dirs", [name])() == [], f"{name} still copies the hook"
