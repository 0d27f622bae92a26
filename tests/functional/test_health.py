"""/healthz says the process is alive; /readyz says whether its database and Redis are reachable."""

import pytest
import webtest

from kloyst import make_configurator


@pytest.fixture(scope="module")
def app_with(kloyst_settings, tmp_path_factory):
    """Build a copy of the test app with some settings changed (e.g. an unreachable Redis)."""
    configs = []

    def build(**overrides) -> webtest.TestApp:
        settings = {**kloyst_settings, **overrides}
        config = make_configurator({"here": str(tmp_path_factory.mktemp("here"))}, settings, environ={})
        configs.append(config)
        return webtest.TestApp(config.make_wsgi_app())

    yield build
    for config in configs:
        config.registry["kloyst.engine"].dispose()


def test_healthz_is_200(testapp):
    assert testapp.get("/healthz").json == {"status": "ok"}


def test_readyz_is_200_when_database_and_redis_answer(testapp):
    assert testapp.get("/readyz").json == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_is_503_naming_redis_when_redis_is_unreachable(app_with):
    app = app_with(**{"kloyst.redis.url": "redis://127.0.0.1:1/0"})
    error = app.get("/readyz", status=503).json["error"]
    assert error["code"] == "not_ready"
    assert "redis is unavailable" in error["message"]
    assert error["details"]["checks"]["database"] == "ok"
    assert error["details"]["checks"]["redis"].startswith("unavailable")


def test_healthz_stays_200_while_redis_is_unreachable(app_with):
    app = app_with(**{"kloyst.redis.url": "redis://127.0.0.1:1/0"})
    app.get("/healthz", status=200)


def test_readyz_is_503_naming_the_database_when_it_is_unreachable(app_with):
    app = app_with(**{"kloyst.database.url": "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"})
    error = app.get("/readyz", status=503).json["error"]
    assert "database is unavailable" in error["message"]
    assert error["details"]["checks"]["redis"] == "ok"
    assert "127.0.0.1" not in error["message"]  # the connection details stay in the log


def test_readyz_reports_rather_than_raises_when_a_probe_fails_oddly(testapp, registry, monkeypatch):
    def broken_ping():
        raise RuntimeError("client in a state nobody expected")

    monkeypatch.setattr(registry["kloyst.redis"], "ping", broken_ping)
    error = testapp.get("/readyz", status=503).json["error"]
    assert error["details"]["checks"]["redis"] == "unavailable (RuntimeError)"
    assert "nobody expected" not in error["message"]


def test_readyz_without_redis_configured_is_ready(app_with):
    app = app_with(**{"kloyst.redis.url": ""})
    assert app.get("/readyz").json["checks"]["redis"] == "not configured (in-process)"
