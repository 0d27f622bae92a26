"""Fixtures for the end-to-end tests: an embedded-default ini in a fresh directory, `kloyst` processes
that are killed by their own pid if a test leaves them running (helpers in e2e_support.py), and the
route from Kloyst's processes to PostgreSQL.

``kloyst_route`` is the PostgreSQL connection of the multi-process tests: ``direct``, or ``pgbouncer``
(a PgBouncer in transaction pooling whose pool is smaller than the processes' connections,
:mod:`kloyst.testing.pgbouncer`). Every Kloyst process and CLI run of a test goes the route; the
test's own connections (creating the database, arranging and inspecting rows) stay direct. A test
asking for it runs both ways."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_support import KLOYST, REPO, Service

from kloyst.testing.processes import free_port


@pytest.fixture
def embedded_ini(tmp_path) -> Path:
    """development.ini copied into an empty directory, so var/ (SQLite, queue, mail, logs) lands there."""
    target = tmp_path / "development.ini"
    shutil.copy(REPO / "development.ini", target)
    # ALL mode serves the embedded Meta sandbox at the Graph URL: a free port each, so tests run side by side.
    text = target.read_text()
    target.write_text(text.replace("kloyst.meta.graph_url = http://127.0.0.1:6590",
                                   f"kloyst.meta.graph_url = http://127.0.0.1:{free_port()}"))
    return target


@pytest.fixture
def start_kloyst(tmp_path):
    """``start_kloyst("run", ini, env=...)`` starts a process; any still running at teardown is killed."""
    started: list[Service] = []

    def start(*args: str, env: dict[str, str]) -> Service:
        index = len(started)
        stdout, stderr = tmp_path / f"kloyst-{index}.out", tmp_path / f"kloyst-{index}.err"
        with stdout.open("w") as out, stderr.open("w") as err:
            process = subprocess.Popen([KLOYST, *args], env=env, cwd=tmp_path, stdout=out, stderr=err)
        service = Service(process, stdout, stderr)
        started.append(service)
        return service

    yield start
    for service in started:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait(timeout=10)


@pytest.fixture(params=["direct", "pgbouncer"])
def kloyst_route(request):
    """``kloyst_route(url)``: the URL Kloyst's processes use for the test database at ``url``, direct or through
    PgBouncer (the fixture's parameter)."""
    if request.param == "direct":
        return lambda url: url
    return request.getfixturevalue("pgbouncer_server").url
