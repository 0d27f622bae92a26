"""The embedded default keeps serving while its tasks work, and its operator commands run on SQLite and staging.

One real `kloyst run` of a development.ini copy (SQLite, one process, free ports) serves the
module: quotation PDFs render while contacts are created, with a stopwatch on every request,
and the operator's commands run beside it from a second process, as docs/operations.md says
they can. Then the commands that run no service are run on staging.ini without SERVICE_TYPE,
against PostgreSQL named by a plain ``postgresql://`` URL.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from e2e_support import KLOYST, REPO, kloyst
from test_sqlite_smoke import DEMO

from kloyst import testing
from kloyst.testing.deployment import http_json, process_env
from kloyst.testing.processes import eventually, free_port, stop_process

pytestmark = pytest.mark.slow

PDF_READY_SECONDS = 5.0
REQUEST_SECONDS = 1.0


class Embedded:
    """The running embedded default: its directory, base URL and the demo owner's token."""

    def __init__(self, directory: Path, base: str, token: str, process: subprocess.Popen) -> None:
        self.directory, self.base, self.token, self.process = directory, base, token, process

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, float]:
        """``(status, body, seconds)`` of one API call as the demo owner."""
        started = time.monotonic()
        status, answer = http_json(f"{self.base}/v1{path}", body, method=method,
                                   headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        return status, answer, time.monotonic() - started

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return kloyst(*args, "development.ini", env=process_env(), cwd=self.directory)

    def exceptions(self) -> str:
        return "".join(path.read_text() for path in (self.directory / "var" / "log").glob("exception-*.log"))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("embedded")
    ini = directory / "development.ini"
    shutil.copy(REPO / "development.ini", ini)
    ini.write_text(ini.read_text().replace("kloyst.meta.graph_url = http://127.0.0.1:6590",
                                           f"kloyst.meta.graph_url = http://127.0.0.1:{free_port()}"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    output = directory / "kloyst.out"
    with output.open("w") as out:
        process = subprocess.Popen([KLOYST, "run", str(ini)], cwd=directory, stdout=out, stderr=subprocess.STDOUT,
                                   env=process_env(PORT=str(port), WEBHOOK_PORT=str(free_port())))
    try:
        eventually(lambda: _answers(f"{base}/healthz"), bool, "the embedded default to serve", timeout=90)
        demo = eventually(lambda: DEMO.search(output.read_text()), bool, "the first-run note", timeout=30)
        status, tokens = http_json(f"{base}/v1/auth/login", {"email": demo.group(1), "password": demo.group(2)})
        assert status == 200, tokens
        yield Embedded(directory, base, tokens["access_token"], process)
    finally:
        stop_process(process, timeout=30)


def _answers(url: str) -> bool:
    try:
        return http_json(url, timeout=1)[0] == 200
    except OSError:
        return False


def create_contacts(embedded: Embedded, count: int) -> list[float]:
    """Create ``count`` contacts with new numbers; the seconds each request took."""
    seconds = []
    for _ in range(count):
        mobile = f"+9198{uuid.uuid4().int % 10**8:08d}"  # a valid Indian mobile number
        status, body, took = embedded.call("POST", "/contacts", {"mobile": mobile, "name": "Timed"})
        assert status in (201, 409), body  # 409: a number drawn twice
        seconds.append(took)
    return seconds


def quote(embedded: Embedded) -> str:
    status, body, _ = embedded.call("POST", "/quotations", {"category": "UTILITY", "audience": {"all": True}})
    assert status == 201, body
    return body["quotation"]["id"]


def pdf_status(embedded: Embedded, quotation_id: str) -> dict:
    return embedded.call("GET", f"/quotations/{quotation_id}")[1]["quotation"]


def test_a_quotation_pdf_is_ready_within_seconds_on_sqlite(embedded):
    create_contacts(embedded, 3)
    quotation_id = quote(embedded)
    started = time.monotonic()
    ready = eventually(lambda: pdf_status(embedded, quotation_id), lambda q: q["pdf_status"] in ("READY", "FAILED"),
                       "the quotation's PDF", timeout=30, pause=0.1)
    assert ready["pdf_status"] == "READY", ready
    assert time.monotonic() - started < PDF_READY_SECONDS
    request = urllib.request.Request(f"{embedded.base}/v1/quotations/{quotation_id}/pdf",
                                     headers={"Authorization": f"Bearer {embedded.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.read(5) == b"%PDF-"


def test_requests_stay_fast_while_quotation_pdfs_render(embedded):
    create_contacts(embedded, 3)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        quoting = pool.submit(lambda: [quote(embedded) for _ in range(12)])  # each enqueues a PDF task
        timings = create_contacts(embedded, 40)
        quotations = quoting.result(60)
    assert max(timings) < REQUEST_SECONDS, f"slowest POST /v1/contacts: {max(timings):.2f} s"
    statuses = eventually(lambda: [pdf_status(embedded, q)["pdf_status"] for q in quotations],
                          lambda found: all(s in ("READY", "FAILED") for s in found), "every PDF", timeout=60)
    assert set(statuses) == {"READY"}
    assert "database is locked" not in embedded.exceptions()


def test_operator_commands_run_on_sqlite_beside_the_running_process(embedded):
    reconciled = embedded.cli("outbox", "reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    assert set(json.loads(reconciled.stdout)) == {"expired_leases", "lost_deliveries", "suspected"}

    wallet = embedded.cli("wallet", "check")
    assert wallet.returncode == 0, wallet.stderr
    assert re.match(r"ok: [1-9]\d* wallets", wallet.stdout), wallet.stdout  # the demo vendor's funded wallet

    messages = embedded.cli("messages", "check")
    assert messages.returncode == 0, messages.stderr
    assert messages.stdout.startswith("ok:")

    status = embedded.cli("outbox", "status")
    assert status.returncode == 0, status.stderr
    assert "queue_depth" in json.loads(status.stdout)


def test_the_process_logged_no_error_of_its_own_loops(embedded):
    create_contacts(embedded, 2)
    time.sleep(3)  # a reconciler pass or two, the drainer's polls, heartbeats
    assert embedded.process.poll() is None
    errors = embedded.exceptions()
    for loop in ("outbox reconciliation failed", "outbox relay failed", "webhook drainer failed",
                 "sender dispatch failed", "database is locked"):
        assert loop not in errors, errors[-3000:]


@pytest.fixture
def staging(tmp_path):
    """``(staging.ini copy, environment)``: every variable staging.ini asks for but SERVICE_TYPE, on a fresh
    PostgreSQL database named by a plain postgresql:// URL."""
    name = f"kloyst_cli_{uuid.uuid4().hex[:10]}"
    url = testing.create_database(name)
    ini = tmp_path / "staging.ini"
    shutil.copy(REPO / "staging.ini", ini)
    settings = testing.TEST_SETTINGS
    known = {"DATABASE_URL": url.replace("postgresql+psycopg2://", "postgresql://"),
             "REDIS_URL": testing.redis_url(), "JWT_SIGNING_KEYS": settings["kloyst.jwt.signing_keys"],
             "DATA_ENCRYPTION_KEYS": settings["kloyst.crypto.data_keys"],
             "DATA_HASH_KEY": settings["kloyst.crypto.hash_key"], "META_APP_SECRET": settings["kloyst.meta.app_secret"],
             "META_VERIFY_TOKEN": settings["kloyst.meta.verify_token"], "SMTP_URL": "smtp://user:pass@127.0.0.1:2525"}
    settings_lines = [line for line in ini.read_text().splitlines() if not line.lstrip().startswith("#")]
    wanted = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", "\n".join(settings_lines))) - {"SERVICE_TYPE"}
    assert wanted <= set(known), f"this test does not know staging.ini's {sorted(wanted - set(known))}"
    env = process_env(**{name: known[name] for name in wanted}, LOG_DIR=str(tmp_path / "log"))
    yield ini, env
    testing.drop_database(name)


def test_commands_that_run_no_service_need_no_service_type_on_staging(staging):
    ini, env = staging
    assert "SERVICE_TYPE" not in env and env["DATABASE_URL"].startswith("postgresql://")
    for command in (("db", "upgrade"), ("db", "check"), ("outbox", "reconcile"), ("wallet", "check"),
                    ("messages", "check")):
        result = kloyst(*command, str(ini), env=env)
        assert result.returncode == 0, f"kloyst {' '.join(command)}: {result.stderr}"
        assert "Traceback" not in result.stderr


def test_running_a_service_from_staging_without_service_type_is_refused_naming_it(staging):
    ini, env = staging
    assert kloyst("db", "upgrade", str(ini), env=env).returncode == 0
    refused = kloyst("run", str(ini), env=env)
    assert refused.returncode == 2
    assert "SERVICE_TYPE" in refused.stderr and "Traceback" not in refused.stderr
