"""Imports on staging's shape: PostgreSQL, Redis, and API_GATEWAY, WORKER and OUTBOX each in a process of its own.

Scanning is required here, as on staging. An upload made while clamd is down waits, and is
scanned within seconds of clamd coming up with no re-upload: each retry is a delayed outbox
event that the OUTBOX process publishes and a WORKER runs. CSV and XLSX then import to the end.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

import pytest

from imports_api_support import ImportsApi, numbers
from imports_processing_support import csv_bytes, xlsx_bytes
from kloyst import testing
from kloyst.cli.bootstrap import load
from kloyst.db import session_scope, tenancy
from kloyst.testing.clamd import ClamdServer
from kloyst.testing.deployment import Deployment
from kloyst.testing.processes import free_port
from kloyst_plugins.imports import tasks

pytestmark = pytest.mark.slow


@dataclass
class Staging:
    deployment: Deployment
    scanner: ClamdServer
    api: ImportsApi

    def scanner_up(self) -> None:
        if self.scanner.process is None:
            self.scanner.start()


@pytest.fixture(scope="module")
def staging(request, tmp_path_factory, kloyst_redis_url):
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"kloyst_imports_processes_{worker}"
    url = testing.create_database(name)
    directory = tmp_path_factory.mktemp("imports-processes")
    scanner = ClamdServer(directory / "clamd", port=free_port())  # started by the tests, after an upload
    keys = {k: v for k, v in testing.TEST_SETTINGS.items() if not k.startswith("kloyst.queue.")}
    deployment = Deployment.from_settings(directory, {
        **keys, "kloyst.database.url": url, "kloyst.redis.url": kloyst_redis_url, "kloyst.queue.backend": "redis",
        "kloyst.queue.name": f"imports-{uuid.uuid4().hex[:8]}", "imports.scan": "required",
        "imports.clamd_address": scanner.address, "imports.storage_dir": str(directory / "imports")})
    for service, mode in (("api", "API_GATEWAY"), ("worker", "WORKER"), ("outbox", "OUTBOX")):
        deployment.add(service, mode)
    registry = None
    try:
        done = deployment.cli("db", "upgrade")
        assert done.returncode == 0, done.stdout + done.stderr
        deployment.start()
        registry = load(str(deployment.ini))[1]
        with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
            owner = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Imports Co")
            for plugin in ("contacts", "imports"):
                testing.enable_plugin(db, owner.vendor_id, plugin)
        yield Staging(deployment, scanner, ImportsApi(deployment.api_url, owner.headers))
    finally:
        deployment.kill_all()
        scanner.stop()
        if registry is not None:
            registry["kloyst.engine"].dispose()
        testing.drop_database(name)


def test_an_upload_made_while_clamd_is_down_is_scanned_within_seconds_of_it_coming_up(staging):
    assert staging.scanner.process is None
    created = staging.api.upload("early.csv", csv_bytes(["phone"], [[n] for n in numbers(3)])[0])
    waiting = staging.api.wait(created["id"], lambda job: job["scan"]["attempts"] >= 3, "to ask clamd three times")
    assert waiting["status"] == "UPLOADED" and waiting["scan"]["result"].startswith(tasks.WAITING)
    assert int(re.search(r"next in (\d+)s", waiting["scan"]["result"]).group(1)) <= tasks.SCAN_RETRY_CAP_SECONDS

    staging.scanner_up()
    up = time.monotonic()
    job = staging.api.wait(created["id"], lambda job: job["status"] != "UPLOADED", "to be scanned")
    assert (job["status"], job["scan"]["result"]) == ("AWAITING_MAPPING", "clean")
    assert time.monotonic() - up < 10


def test_csv_and_xlsx_imports_finish_across_processes(staging):
    staging.scanner_up()
    rows = [[n, f"Name {i}"] for i, n in enumerate(numbers(5, start=100))] + [["not a number", "X"]]
    csv_job = staging.api.import_file("contacts.csv", csv_bytes(["phone", "name"], rows)[0],
                                      {"phone": "phone", "name": "name"})
    assert csv_job["status"] == "PARTIAL_SUCCESS", csv_job
    assert (csv_job["counts"]["created"], csv_job["counts"]["rejected"]) == (5, 1)
    assert csv_job["scan"]["result"] == "clean"

    xlsx_job = staging.api.import_file("contacts.xlsx", xlsx_bytes(["Mobile"], [[n] for n in numbers(3, start=200)]),
                                       {"phone": "Mobile"})
    assert xlsx_job["status"] == "COMPLETED" and xlsx_job["counts"]["created"] == 3, xlsx_job
