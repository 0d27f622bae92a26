"""The ``kloyst`` command line, run as an operator runs it: a subprocess, an ini file, the environment."""

import shutil
import uuid

import pytest
import webtest
from e2e_support import REPO, kloyst

from kloyst import make_configurator, testing
from kloyst.testing.deployment import process_env

STAGING_VARIABLES = ("DATABASE_URL", "REDIS_URL", "JWT_SIGNING_KEYS", "DATA_ENCRYPTION_KEYS", "DATA_HASH_KEY",
                     "META_APP_SECRET", "META_VERIFY_TOKEN", "SMTP_URL")
KEY = "A" * 43  # 32 bytes of base64url


@pytest.fixture
def fresh_database():
    """An empty PostgreSQL database of its own, dropped afterwards."""
    name = f"kloyst_cli_{uuid.uuid4().hex[:10]}"
    url = testing.create_database(name)
    yield url
    testing.drop_database(name)


@pytest.fixture(scope="module")
def admin_cli(tmp_path_factory):
    """``(ini, env)`` for a database upgraded once by ``kloyst db upgrade``, shared by the create-admin tests."""
    name = f"kloyst_cli_{uuid.uuid4().hex[:10]}"
    url = testing.create_database(name)
    ini = tmp_path_factory.mktemp("cli") / "development.ini"
    shutil.copy(REPO / "development.ini", ini)
    env = process_env(DATABASE_URL=url)
    upgraded = kloyst("db", "upgrade", str(ini), env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    yield str(ini), env
    testing.drop_database(name)


@pytest.fixture
def staging_ini(tmp_path):
    target = tmp_path / "staging.ini"
    shutil.copy(REPO / "staging.ini", target)
    return target


def test_db_check_fails_before_upgrade_and_passes_after(embedded_ini, fresh_database, kloyst_route):
    """Directly and through PgBouncer in transaction pooling: the migrations need no session of their own."""
    env = process_env(DATABASE_URL=kloyst_route(fresh_database))
    ini = str(embedded_ini)

    before = kloyst("db", "check", ini, env=env)
    assert before.returncode == 1, before.stderr
    assert f"kloyst db upgrade {ini}" in before.stderr

    current = kloyst("db", "current", ini, env=env)
    assert current.returncode == 0, current.stderr
    assert "current: (empty database)" in current.stdout

    upgrade = kloyst("db", "upgrade", ini, env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.startswith("database at ")

    current = kloyst("db", "current", ini, env=env)
    current_line, heads_line = current.stdout.splitlines()[:2]
    assert current_line.removeprefix("current:").strip() == heads_line.removeprefix("heads:").strip() != ""

    after = kloyst("db", "check", ini, env=env)
    assert after.returncode == 0, after.stderr
    assert "up to date" in after.stdout


def test_create_admin_makes_a_platform_admin_who_can_sign_in(admin_cli, kloyst_settings, tmp_path):
    ini, env = admin_cli
    created = kloyst("create-admin", ini, "--email", "Root@Example.com", "--name", "Root",
                     env={**env, "KLOYST_ADMIN_PASSWORD": testing.TEST_PASSWORD})
    assert created.returncode == 0, created.stderr
    assert "platform admin root@example.com created" in created.stdout.lower()
    assert testing.TEST_PASSWORD not in created.stdout + created.stderr

    config = make_configurator({"here": str(tmp_path)}, {**kloyst_settings, "kloyst.database.url": env["DATABASE_URL"]},
                               environ={})
    try:
        app = webtest.TestApp(config.make_wsgi_app())
        tokens = app.post_json("/v1/auth/login", {"email": "root@example.com",
                                                  "password": testing.TEST_PASSWORD}).json
        me = app.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json
        assert me["user"]["is_platform_admin"] is True
        assert me["vendor"] is None
    finally:
        config.registry["kloyst.engine"].dispose()


def test_create_admin_refuses_a_weak_password_and_a_taken_email_with_a_message(admin_cli):
    ini, env = admin_cli
    weak = kloyst("create-admin", ini, "--email", "a@example.com", env={**env, "KLOYST_ADMIN_PASSWORD": "short"})
    assert weak.returncode == 1
    assert "password must be at least" in weak.stderr
    assert "Traceback" not in weak.stderr

    strong = {**env, "KLOYST_ADMIN_PASSWORD": testing.TEST_PASSWORD}
    assert kloyst("create-admin", ini, "--email", "a@example.com", env=strong).returncode == 0
    again = kloyst("create-admin", ini, "--email", "a@example.com", env=strong)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_plugins_lists_core_with_its_hooks(embedded_ini):
    listed = kloyst("plugins", str(embedded_ini), env=process_env())
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    core = next(i for i, line in enumerate(lines) if line.startswith("core "))
    assert "essential" in lines[core]
    hooks = next(line for line in lines[core + 1:] if line.strip().startswith("hooks:"))
    names = hooks.split(":", 1)[1].replace(",", " ").split()
    assert "kloyst_cli_commands" in names  # the core's own commands come through the hook
    assert all(name.startswith("kloyst_") for name in names)


def test_staging_without_its_environment_names_every_missing_variable(staging_ini):
    result = kloyst("db", "current", str(staging_ini), env=process_env())
    assert result.returncode == 2
    for name in STAGING_VARIABLES:
        assert name in result.stderr, name
    assert "SERVICE_TYPE" not in result.stderr  # `db current` runs no service
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_staging_with_its_environment_set_starts(staging_ini, fresh_database, tmp_path):
    env = process_env(DATABASE_URL=fresh_database, REDIS_URL=testing.redis_url(), JWT_SIGNING_KEYS=f"stg-1:{KEY}",
                      DATA_ENCRYPTION_KEYS=f"stg-data-1:{KEY}", DATA_HASH_KEY="staging-hash-key",
                      META_APP_SECRET="staging-app-secret", META_VERIFY_TOKEN="staging-verify",
                      SMTP_URL="smtp://user:pass@127.0.0.1:2525", SERVICE_TYPE="API_GATEWAY",
                      LOG_DIR=str(tmp_path / "log"))
    result = kloyst("db", "current", str(staging_ini), env=env)
    assert result.returncode == 0, result.stderr
    assert "current: (empty database)" in result.stdout


def test_run_refuses_a_database_that_is_behind_the_migrations(embedded_ini, fresh_database):
    result = kloyst("run", str(embedded_ini), env=process_env(DATABASE_URL=fresh_database, SERVICE_TYPE="API_GATEWAY"))
    assert result.returncode == 2
    assert f"kloyst db upgrade {embedded_ini}" in result.stderr


def test_an_invalid_service_type_flag_is_refused_with_the_valid_ones(embedded_ini):
    result = kloyst("run", str(embedded_ini), "--service-type", "BOGUS", env=process_env())
    assert result.returncode == 2
    for mode in ("API_GATEWAY", "WEBHOOK", "WORKER", "OUTBOX", "ALL"):
        assert mode in result.stderr


def test_a_missing_ini_file_is_a_clear_error(tmp_path):
    result = kloyst("db", "current", str(tmp_path / "nope.ini"), env=process_env())
    assert result.returncode == 2
    assert "nope.ini" in result.stderr and "not found" in result.stderr
