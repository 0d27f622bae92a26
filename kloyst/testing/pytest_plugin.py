"""pytest fixtures for Kloyst and its plugins (registered through the ``pytest11`` entry point).

One PostgreSQL database per test run (per xdist worker), built from the migrations of the
core and every installed plugin. The application is built once per run; each test runs
inside a transaction on one connection that is rolled back afterwards, while the app's
own commits become savepoints, so tests are isolated and fast. Tests that need real
commits seen by other connections (concurrency) use ``committed_db``, which truncates
afterwards.

Plugin authors get the same fixtures: ``app``, ``testapp``, ``db``, ``accounts``,
``enable_plugin``, ``task_recorder``, ``mailbox``, ``run_outbox``, and ``embedded_config`` for the
embedded default's SQLite.
"""

from __future__ import annotations

import email
import email.policy
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from kloyst import testing  # imports none of the application: pytest loads this plugin before coverage starts


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end or fault-injection test (still runs in CI)")
    config.addinivalue_line("markers", "timed: asserts a wall-clock budget, so it runs without coverage tracing")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that time themselves run untraced: coverage's line tracing makes a tight loop several times slower.

    Those marked ``timed``, and those whose node id starts with one of ``KLOYST_TEST_UNTRACED`` (spaces
    between; scripts/run-tests names the ones not marked yet). Only when pytest-cov is there to pause.
    """
    if not config.pluginmanager.hasplugin("pytest_cov"):
        return
    untraced = tuple(os.environ.get("KLOYST_TEST_UNTRACED", "").split())
    for item in items:
        if item.get_closest_marker("timed") or (untraced and item.nodeid.startswith(untraced)):
            item.add_marker(pytest.mark.no_cover)


def _worker_id(request) -> str:
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


def _worker_index(request) -> int:
    worker = _worker_id(request)
    return int(worker.removeprefix("gw")) if worker.startswith("gw") else 0


@pytest.fixture(scope="session")
def kloyst_redis_url(request) -> str:
    """This worker's own Redis database (flushed before every test that uses Redis)."""
    return testing.redis_url(_worker_index(request))


@pytest.fixture
def redis_client(kloyst_redis_url):
    """A client of this worker's Redis database, emptied before the test."""
    import redis

    client = redis.Redis.from_url(kloyst_redis_url)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:  # the suite's contract: Redis on 127.0.0.1
        pytest.fail(f"Redis is not reachable at {kloyst_redis_url}: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def kloyst_extra_plugins():
    """Override to register extra plugin modules as ``[(name, module)]`` (in-test plugins)."""
    return []


@pytest.fixture(scope="session")
def kloyst_database(request, kloyst_extra_plugins):
    """A fresh PostgreSQL database migrated to every head; dropped at the end of the run."""
    from kloyst.db import make_engine, migrate
    from kloyst.plugins import build_plugin_manager

    name = f"{testing.database_prefix()}_{_worker_id(request)}_{os.getpid()}"
    url = testing.create_database(name)
    engine = make_engine(url)
    try:
        migrate.upgrade(build_plugin_manager(kloyst_extra_plugins), engine)
    finally:
        engine.dispose()
    yield url
    testing.drop_database(name)


@pytest.fixture(scope="session")
def kloyst_sandbox_server():
    """One Meta sandbox for the run, on a free port, signing webhooks with the test app secret.

    The test application's Graph URL points at it, so every Meta call a test triggers goes over
    real HTTP to it. Use :func:`meta_sandbox`, which resets it for each test.
    """
    from kloyst.sandbox import SandboxServer, SandboxState
    from kloyst.sandbox.state import Behaviour

    server = SandboxServer(SandboxState(app_secret=testing.TEST_SETTINGS["kloyst.meta.app_secret"],
                                        behaviour=Behaviour(latency_ms=0))).start()
    yield server
    server.close()


@pytest.fixture
def meta_sandbox(kloyst_sandbox_server):
    """The run's Meta sandbox, emptied for this test: no numbers, no templates, no latency, nothing recorded.

    Configure it directly (``meta_sandbox.state.add_number(...)``, ``.add_template(...)``,
    ``.behaviour.update({...})``) or over HTTP at ``meta_sandbox.url + "/_sandbox/..."``.
    """
    return reset_sandbox(kloyst_sandbox_server)


def reset_sandbox(server):
    """Empty the shared sandbox between tests: no numbers, templates or records, default behaviour, and no
    webhook of an earlier test still waiting for a retry (it would reach this test's receiver)."""
    from kloyst.sandbox.state import Behaviour

    state = server.state
    server.webhooks.drop_scheduled()
    with state.lock:
        state.behaviour = Behaviour(latency_ms=0)
        state.numbers.clear()
        state.templates.clear()
        state.undeliverable.clear()
        state.reset_records()
    return server


@pytest.fixture(scope="session")
def kloyst_settings(kloyst_database, kloyst_redis_url, kloyst_sandbox_server, tmp_path_factory):
    """The settings the test application is built from; override to add plugin settings."""
    var = tmp_path_factory.mktemp("var")
    return {
        **testing.TEST_SETTINGS,
        "kloyst.meta.graph_url": kloyst_sandbox_server.url,
        "kloyst.database.url": kloyst_database,
        "kloyst.redis.url": kloyst_redis_url,
        "kloyst.mail.file_dir": str(var / "mail"),
        "kloyst.log.dir": str(var / "log"),
        "kloyst.queue.sqlite_path": str(var / "queue.sqlite"),
    }


@pytest.fixture(scope="session")
def app_config(kloyst_settings, kloyst_extra_plugins, tmp_path_factory):
    """The fully wired Configurator, built once per run (its registry is ``app_config.registry``)."""
    from kloyst import make_configurator

    here = tmp_path_factory.mktemp("here")
    return make_configurator({"here": str(here)}, dict(kloyst_settings), extra_plugins=kloyst_extra_plugins,
                             environ={})


@pytest.fixture
def embedded_config(tmp_path, kloyst_extra_plugins):
    """The application as the embedded default runs it, beside the PostgreSQL one: SQLite and the SQLite queue
    under ``tmp_path``, migrated, no Redis — for what only SQLite shows (its one writer, its types)."""
    from kloyst import make_configurator
    from kloyst.db import migrate

    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": f"sqlite:///{tmp_path}/k.sqlite",
                "kloyst.redis.url": "", "kloyst.mail.file_dir": f"{tmp_path}/mail",
                "kloyst.log.dir": f"{tmp_path}/log", "kloyst.queue.sqlite_path": f"{tmp_path}/q.sqlite"}
    config = make_configurator({"here": str(tmp_path)}, settings, extra_plugins=kloyst_extra_plugins, environ={})
    migrate.upgrade(config.registry["kloyst.plugin_manager"], config.registry["kloyst.engine"])
    yield config
    config.registry["kloyst.engine"].dispose()


@pytest.fixture(scope="session")
def wsgi_app(app_config):
    return app_config.make_wsgi_app()


@pytest.fixture(scope="session")
def registry(app_config):
    return app_config.registry


@pytest.fixture
def db_connection(registry):
    """One connection in an outer transaction, rolled back after the test; the app's commits are savepoints."""
    from kloyst.db import tenancy  # not at the top: see kloyst.testing

    engine = registry["kloyst.engine"]
    connection = engine.connect()
    outer = connection.begin()
    original = registry["kloyst.session_factory"]
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False,
                           class_=tenancy.ScopedSession)
    tenancy.install(factory)
    registry["kloyst.session_factory"] = factory
    try:
        yield connection
    finally:
        registry["kloyst.session_factory"] = original
        outer.rollback()
        connection.close()


def _platform_session(registry):
    from kloyst.db import tenancy  # not at the top: see kloyst.testing

    session = registry["kloyst.session_factory"]()
    tenancy.set_scope(session, tenancy.ALL_VENDORS)
    return session


@pytest.fixture
def db(registry, db_connection):
    """A platform-wide session for arranging and checking data (commits become savepoints)."""
    with _platform_session(registry) as session:
        yield session


@pytest.fixture
def committed_db(registry):
    """Real commits visible to every connection (concurrency tests); every table is emptied afterwards."""
    from kloyst.db import Base

    try:
        with _platform_session(registry) as session:
            yield session
    finally:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with registry["kloyst.engine"].begin() as connection:
            connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(autouse=True)
def _clean_redis(request, registry_if_built):
    client = registry_if_built["kloyst.redis"] if registry_if_built is not None else None
    if client is not None:
        client.flushdb()
    yield


@pytest.fixture
def registry_if_built(request):
    """The registry when the test uses the application, else None (keeps pure unit tests service-free)."""
    if "registry" in request.fixturenames or "testapp" in request.fixturenames:
        return request.getfixturevalue("registry")
    return None


@pytest.fixture
def testapp(wsgi_app, db_connection):
    import webtest

    return webtest.TestApp(wsgi_app, extra_environ={"REMOTE_ADDR": f"192.0.2.{uuid.uuid4().int % 250 + 1}"})


@pytest.fixture
def accounts(db, registry):
    """Factory of vendors and users with ready access tokens: ``accounts.vendor()``, ``accounts.user(vendor)``."""
    return testing.AccountFactory(db, registry["kloyst.access_tokens"])


@pytest.fixture
def owner(accounts, db):
    """A vendor and its owner (an :class:`kloyst.testing.Account`: ``owner.headers`` signs requests)."""
    account = accounts.vendor("Owner Co")
    db.commit()
    return account


@pytest.fixture
def enable_plugin(db):
    """``enable_plugin(account_or_vendor_id, "name")`` turns a plugin on for a vendor."""

    def enable(target, name: str) -> None:
        vendor_id = getattr(target, "vendor_id", target)
        testing.enable_plugin(db, vendor_id, name)
        db.commit()

    return enable


@pytest.fixture
def task_recorder(registry, monkeypatch):
    """Record tasks sent after their transaction commits, without running them: ``[(name, kwargs)]``.

    The tasks' outbox events stay pending; ``run_outbox()`` runs them later.
    """
    queue = registry["kloyst.queue"]
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(queue, "send_after_commit", lambda event_id, name, kwargs: sent.append((name, kwargs)))
    return sent


@pytest.fixture
def run_outbox(registry, db_connection):
    """Publish every pending outbox event now (tasks run immediately in tests); returns how many."""
    from kloyst.outbox.relay import relay_once

    def run(max_batches: int = 1000) -> int:
        total = 0
        for _ in range(max_batches):
            published = relay_once(registry)
            if not published:
                return total
            total += published
        raise AssertionError(f"the outbox still had events after {max_batches} batches: is a handler re-enqueueing "
                             "itself?")

    return run


class Mailbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def messages(self) -> list[email.message.EmailMessage]:
        if not self.directory.exists():
            return []
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                for p in sorted(self.directory.glob("*.eml"))]

    def to(self, address: str) -> list:
        return [m for m in self.messages() if m["To"] == address]

    def clear(self) -> None:
        for path in self.directory.glob("*.eml"):
            path.unlink()


@pytest.fixture
def mailbox(registry):
    """The file mailer's directory, emptied before the test."""
    box = Mailbox(Path(registry.settings["kloyst.mail.file_dir"]))
    box.clear()
    return box


@pytest.fixture(scope="session")
def clamd(tmp_path_factory):
    """A private clamd for the run (EICAR signatures only, offline): ``clamd.address`` is ``tcp://…``.

    Fails, rather than skips, when clamd is not installed: a scanner the tests never run
    against is a scanner nobody knows works. Point the application at it with
    ``monkeypatch.setitem(registry.settings, "imports.clamd_address", clamd.address)``.
    """
    from kloyst.testing.clamd import ClamdServer

    server = ClamdServer(tmp_path_factory.mktemp("clamd"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgbouncer_server(tmp_path_factory):
    """One PgBouncer in transaction pooling for this test worker, in front of the test PostgreSQL.

    ``pgbouncer_server.url(database_url)`` is that database's URL through it: give it to the processes
    under test (their pool is bigger than PgBouncer's, so pooling is exercised); keep the test's own
    connections direct. Fails, rather than skips, when pgbouncer is not installed.
    """
    from kloyst.testing import pgbouncer

    with pgbouncer.running(tmp_path_factory.mktemp("pgbouncer"), testing.postgres_admin_url()) as bouncer:
        yield bouncer
