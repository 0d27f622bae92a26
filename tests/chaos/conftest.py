"""The deployment people run, on this machine: API_GATEWAY, WEBHOOK, two WORKERs and OUTBOX as separate
``kloyst run`` processes on PostgreSQL and Redis, and the Meta sandbox in a process of its own.

One deployment per module and connection (starting it costs seconds; every test leaves it running).
Its database is its own (``kloyst_chaos_<worker>``), migrated by ``kloyst db upgrade`` as an operator
does, and its Redis database is this test worker's.

How Kloyst reaches PostgreSQL is the fixture's parameter: ``pgbouncer`` (every process and every
CLI run, migrations included, through a PgBouncer in transaction pooling whose pool is smaller than
the processes' connections: :mod:`kloyst.testing.pgbouncer`) or ``direct``. The whole suite runs
through PgBouncer, the stricter of the two: a session ``SET``, lock or prepared statement that
transaction pooling breaks fails there. Running every test both ways would add the fault run's two
minutes for nothing PgBouncer-specific, so only the fault-free campaign also runs on a direct
connection (marked ``direct_too``), the deployment most operators start with.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kloyst import testing
from kloyst.testing.deployment import Deployment, Sandbox
from kloyst.testing.processes import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_support import (  # noqa: E402
    CALM_NUMBER,
    CHAOS_NUMBER,
    RECIPIENTS,
    SERVICES,
    WABA,
    Vendor,
    arrange_vendor,
    deployment_settings,
    registry_for,
)


@dataclass
class Chaos:
    deployment: Deployment
    sandbox: Sandbox
    registry: object
    engine: object
    vendor: Vendor
    redis_url: str
    directory: Path


CONNECTIONS = ("pgbouncer", "direct")  # PgBouncer first: a test on it alone shares that deployment


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "direct_too: also run this chaos test with Kloyst connected to PostgreSQL "
                                       "directly (tests/chaos/conftest.py)")


def pytest_generate_tests(metafunc) -> None:
    """The ``chaos`` deployment through PgBouncer for every test, and direct too for those marked ``direct_too``."""
    if "chaos" in metafunc.fixturenames:
        routes = CONNECTIONS if metafunc.definition.get_closest_marker("direct_too") else CONNECTIONS[:1]
        metafunc.parametrize("chaos", routes, indirect=True, scope="module")


@pytest.fixture(scope="module")
def chaos(request, tmp_path_factory, kloyst_redis_url):
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"kloyst_chaos_{worker}"
    database_url = testing.create_database(name)
    if request.param == "pgbouncer":
        database_url = request.getfixturevalue("pgbouncer_server").url(database_url)
    directory = tmp_path_factory.mktemp(f"chaos-{request.param}")
    sandbox_port = free_port()
    deployment = Deployment.from_settings(directory, deployment_settings(database_url, kloyst_redis_url,
                                                                         f"http://127.0.0.1:{sandbox_port}"))
    for service, mode in SERVICES:
        deployment.add(service, mode)
    sandbox = Sandbox(deployment.ini, directory / "sandbox.log", numbers={CALM_NUMBER: 1000, CHAOS_NUMBER: 80},
                      waba=WABA, port=sandbox_port, latency_ms=100, webhook_url=deployment.webhook_url,
                      retry_max_interval=2.0)
    registry = None
    try:
        for command in (("db", "upgrade"), ("pricing", "load-card", "--development")):
            done = deployment.cli(*command)
            assert done.returncode == 0, done.stdout + done.stderr
        sandbox.start()
        deployment.start()
        registry = registry_for(deployment)
        vendor = arrange_vendor(deployment, registry, RECIPIENTS)
        yield Chaos(deployment, sandbox, registry, registry["kloyst.engine"], vendor, kloyst_redis_url, directory)
    finally:
        deployment.kill_all()
        sandbox.stop()
        if registry is not None:
            registry["kloyst.engine"].dispose()
        if not os.environ.get("KLOYST_CHAOS_KEEP"):  # set it to keep the database for a post-mortem
            testing.drop_database(name)
