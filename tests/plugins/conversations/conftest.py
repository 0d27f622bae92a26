"""Fixtures for the conversations plugin's tests (the builders live in ``conversations_support``).

Every test runs twice: on PostgreSQL (the test database, rolled back after each test, with Redis)
and on the embedded default (a migrated SQLite file and the SQLite queue, no Redis) — both talking
to the run's Meta sandbox over HTTP.
"""

from __future__ import annotations

import pytest
import webtest
from conversations_support import Inbox, Line

from kloyst import testing
from kloyst.db import tenancy


@pytest.fixture
def embedded_app(tmp_path, kloyst_extra_plugins, kloyst_sandbox_server):
    """The application as ``make run`` builds it (SQLite, migrated), calling the test sandbox as Meta."""
    from kloyst import make_configurator
    from kloyst.db import migrate

    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": f"sqlite:///{tmp_path}/k.sqlite",
                "kloyst.redis.url": "", "kloyst.mail.file_dir": f"{tmp_path}/mail",
                "kloyst.log.dir": f"{tmp_path}/log", "kloyst.queue.sqlite_path": f"{tmp_path}/q.sqlite",
                "kloyst.meta.graph_url": kloyst_sandbox_server.url}
    config = make_configurator({"here": str(tmp_path)}, settings, extra_plugins=kloyst_extra_plugins, environ={})
    migrate.upgrade(config.registry["kloyst.plugin_manager"], config.registry["kloyst.engine"])
    yield config
    config.registry["kloyst.engine"].dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def inbox(request, meta_sandbox) -> Inbox:
    if request.param == "postgresql":
        yield Inbox(request.getfixturevalue("db"), request.getfixturevalue("registry"),
                    request.getfixturevalue("testapp"), request.getfixturevalue("run_outbox"), meta_sandbox)
        return
    from kloyst.outbox.relay import relay_once

    config = request.getfixturevalue("embedded_app")
    registry = config.registry

    def run_outbox() -> int:
        total = 0
        while published := relay_once(registry):
            total += published
        return total

    with registry["kloyst.session_factory"]() as db:
        tenancy.set_scope(db, tenancy.ALL_VENDORS)
        yield Inbox(db, registry, webtest.TestApp(config.make_wsgi_app(), extra_environ={"REMOTE_ADDR": "192.0.2.9"}),
                    run_outbox, meta_sandbox)


@pytest.fixture
def line(inbox) -> Line:
    """A vendor with the inbox on and one connected number, known to the Meta sandbox."""
    return inbox.line()


@pytest.fixture
def recorded_tasks(inbox, monkeypatch) -> list:
    """Tasks sent after their transaction commits, recorded instead of run (``inbox.run_outbox()`` runs them)."""
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(inbox.registry["kloyst.queue"], "send_after_commit",
                        lambda event_id, name, kwargs: sent.append((name, kwargs)))
    return sent
