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
    for _, directory in pm.collect("kloyst_migration_dirs"):
        assert str(__import__("pathlib").Path(directory).resolve()) in locations
