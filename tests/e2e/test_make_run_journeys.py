"""`make run` in a fresh copy of the repository, then the journeys a newcomer takes, against a stopwatch.

Nothing is installed for it but what `make run` itself checks: the copy gets a ``.venv`` whose
``bin/python`` and ``bin/kloyst`` are this run's own (and the stamp that says it is installed), so
the Makefile's bootstrap finds it ready instead of reinstalling from the registry. Everything else
is the newcomer's path — development.ini as shipped (only its ports moved, so tests run side by
side), SQLite under ``var/``, the huey queue in SQLite, no scanner, the embedded Meta sandbox.

The stopwatch is the issue's: a quotation's PDF READY within 5 s of the quote, a 10,000-row CSV
import finished within 10 s of its mapping, and no request — the walk's own, and a probe that asks
for ``/v1/auth/me`` every 100 ms the whole time — answered in more than 1 s while tasks run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from kloyst.testing.deployment import process_env
from kloyst.testing.processes import eventually, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("VIRTUAL_ENV") or REPO / ".venv")
DEMO = re.compile(r"demo vendor owner (\S+@\S+) with password (\S+)")
WABA = "200000000000001"  # the embedded sandbox's WABA (kloyst/sandbox/embedded.py)
FAST_NUMBER = "100000000000001"  # its 1,000-mps number
SLOWEST_REQUEST_SECONDS = 1.0


class Client:
    """JSON over HTTP to one Kloyst, timing every request it makes (the walk's and the probe's)."""

    def __init__(self, base: str):
        self.base = base
        self.token: str | None = None
        self.timings: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def call(self, method: str, path: str, body=None, *, headers: dict | None = None, raw: bytes | None = None,
             token: str | None = None) -> tuple[int, dict | bytes, dict]:
        all_headers = dict(headers or {})
        if body is not None:
            all_headers["Content-Type"] = "application/json"
            raw = json.dumps(body).encode()
        if token or self.token:
            all_headers["Authorization"] = f"Bearer {token or self.token}"
        request = urllib.request.Request(self.base + path, data=raw, method=method, headers=all_headers)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, content, answer_headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, content, answer_headers = error.code, error.read(), dict(error.headers)
        finally:
            with self._lock:
                self.timings.append((time.monotonic() - started, f"{method} {path}"))
        if answer_headers.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(content or b"{}"), answer_headers
        return status, content, answer_headers

    def json(self, method: str, path: str, body=None, *, expect: int = 200, **options) -> dict:
        status, answer, _ = self.call(method, path, body, **options)
        assert status == expect, f"{method} {path}: {status} {answer}"
        return answer

    def upload(self, path: str, filename: str, content: bytes, content_type: str) -> dict:
        boundary = "kloyst-journey-boundary"
        raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
               f"Content-Type: {content_type}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        status, answer, _ = self.call("POST", path, raw=raw,
                                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 201, f"upload {filename}: {status} {answer}"
        return answer

    def slowest(self) -> tuple[float, str]:
        with self._lock:
            return max(self.timings)


class Probe(threading.Thread):
    """Asks for ``/v1/auth/me`` every 100 ms until stopped: an API that a task blocks shows up here."""

    def __init__(self, client: Client):
        super().__init__(daemon=True)
        self.client = client
        self.stopped = threading.Event()
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            status, answer, _ = self.client.call("GET", "/v1/auth/me")
            if status != 200:
                self.failures.append(f"{status} {answer}")


def fresh_checkout(target: Path) -> Path:
    """The repository's files as a clone has them (tracked and not ignored), and a ready ``.venv``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    bin_dir = target / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "kloyst"):
        (bin_dir / tool).symlink_to(VENV / "bin" / tool)
    (target / ".venv" / ".installed").touch()  # what scripts/bootstrap-venv leaves after installing
    return target


class MakeRun:
    """``make run`` in ``directory`` (its ports moved to free ones), output to files."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port, self.webhook_port, self.sandbox_port = free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.runs = 0
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        """Start it, wait until it answers; its output so far."""
        self.runs += 1
        self.out = self.directory / f"make-run-{self.runs}.out"
        # The probe alone asks ten times a second, twice the default per-user limit: it measures the API's
        # latency, not the limiter (tests/functional/test_rate_limit.py does that).
        env = process_env(PORT=str(self.port), WEBHOOK_PORT=str(self.webhook_port),
                          META_GRAPH_URL=f"http://127.0.0.1:{self.sandbox_port}",
                          RATELIMIT_PER_USER="100000/60", RATELIMIT_PER_VENDOR="100000/60")
        with self.out.open("w") as out:
            self.process = subprocess.Popen(["make", "run"], cwd=self.directory, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        eventually(self._answers, bool, f"`make run` to answer on {self.base}/healthz", timeout=60, pause=0.2)
        return self.output()

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"`make run` exited with {self.process.returncode}:\n{self.output()}")
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def output(self) -> str:
        return self.out.read_text()

    def stop(self) -> int:
        """SIGTERM to Kloyst (make's child), as a supervisor would; make's exit status, which is Kloyst's."""
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        for pid in children.split():
            os.kill(int(pid), signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def make_run(tmp_path):
    kloyst = MakeRun(fresh_checkout(tmp_path / "kloyst"))
    yield kloyst
    if kloyst.process is not None and kloyst.process.poll() is None:
        os.killpg(kloyst.process.pid, signal.SIGKILL)
        kloyst.process.wait()


def contacts_csv(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["phone", "name", "labels"])
    for index in range(rows):
        writer.writerow([f"+919876{index:06d}", f"Contact {index}", "bulk"])
    writer.writerow(["not a number", "Broken", ""])
    return out.getvalue().encode()


def contacts_xlsx() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["phone", "name"])
    sheet.append(["+12025550171", "Xia"])
    sheet.append(["+12025550172", "Yusuf"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def import_file(client: Client, filename: str, content: bytes, content_type: str, columns: dict) -> tuple[dict, float]:
    """Upload, map and wait for the import to finish; the job and the seconds from the mapping to its end."""
    job = client.upload("/v1/imports", filename, content, content_type)["import"]
    assert "not scanned" in json.dumps(job), job  # the embedded default says so, loudly
    path = f"/v1/imports/{job['id']}"
    eventually(lambda: client.json("GET", path)["import"]["status"], lambda s: s != "UPLOADED",
               f"{filename}'s headers to be read", timeout=10, pause=0.1)
    mapped = time.monotonic()
    client.json("PUT", f"{path}/mapping", {"columns": columns, "merge_strategy": "MERGE_LABELS"})
    job = eventually(lambda: client.json("GET", path)["import"], lambda j: j["finished_at"] is not None,
                     f"{filename}'s import to finish", timeout=60, pause=0.1)
    return job, time.monotonic() - mapped


def test_make_run_in_a_fresh_clone_walks_every_journey_within_its_time(make_run):
    first = make_run.start()
    demo = DEMO.search(first)
    assert demo, first
    client = Client(make_run.base)
    client.token = client.json("POST", "/v1/auth/login", {"email": demo[1], "password": demo[2]})["access_token"]
    probe = Probe(client)
    probe.start()

    # Contacts, one by one and from files: 10,000 rows in CSV (one of them bad), a small XLSX.
    client.json("POST", "/v1/contacts", {"mobile": "+12025550150", "name": "Ann"}, expect=201)
    job, seconds = import_file(client, "contacts.csv", contacts_csv(10_000), "text/csv",
                               {"phone": "phone", "name": "name", "labels": "labels"})
    assert job["status"] == "PARTIAL_SUCCESS" and job["counts"]["created"] == 10_000, job
    assert job["counts"]["rejected"] == 1, job
    assert seconds < 10, f"10,000 rows took {seconds:.1f} s from mapping to finished"
    job, _ = import_file(client, "contacts.xlsx", contacts_xlsx(),
                         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                         {"phone": "phone", "name": "name"})
    assert job["status"] == "COMPLETED" and job["counts"]["created"] == 2, job

    # The WABA and its templates, a message to READ.
    client.json("POST", "/v1/wabas", {"meta_waba_id": WABA, "name": "Sandbox", "access_token": "any-token"},
                expect=201)
    numbers = eventually(lambda: client.json("GET", "/v1/phone-numbers")["items"], lambda items: len(items) == 2,
                         "the sandbox's numbers to sync", timeout=20)
    fast = next(n for n in numbers if n["meta_phone_number_id"] == FAST_NUMBER)
    client.json("POST", "/v1/templates/sync", expect=202)
    templates = eventually(lambda: client.json("GET", "/v1/templates?status=APPROVED")["items"],
                           lambda items: any(t["name"] == "welcome" for t in items), "the templates to sync",
                           timeout=20)
    welcome = next(t for t in templates if t["name"] == "welcome")
    sent = client.json("POST", "/v1/messages", {"phone_number_id": fast["id"], "to": "+12025550150",
                                                "template": {"name": "welcome", "language": "en_US"},
                                                "parameters": {"body": {"first_name": "Ann"}}},
                       headers={"Idempotency-Key": "journey-1"}, expect=202)["message"]
    eventually(lambda: client.json("GET", f"/v1/messages/{sent['id']}")["message"]["status"],
               lambda s: s == "READ", "the message to be read", timeout=30)

    # A campaign to everyone: quoted, its PDF within 5 s, launched, finished, exported; the wallet pays it.
    campaign = client.json("POST", "/v1/campaigns", {
        "name": "Welcome everyone", "template_id": welcome["id"], "phone_number_id": fast["id"],
        "audience": {"all": True}, "variables": {"first_name": {"field": "name", "default": "there"}}},
        expect=201)["campaign"]
    # The demo's starting balance pays for a few hundred messages: a platform admin tops it up.
    admin = subprocess.run([str(make_run.directory / ".venv" / "bin" / "kloyst"), "create-admin", "development.ini",
                            "--email", "ops@example.com"], cwd=make_run.directory, capture_output=True, text=True,
                           env=process_env(KLOYST_ADMIN_PASSWORD="an admin's long password"), timeout=60)
    assert admin.returncode == 0, admin.stdout + admin.stderr
    admin_token = client.json("POST", "/v1/auth/login",
                              {"email": "ops@example.com", "password": "an admin's long password"})["access_token"]
    vendor_id = client.json("GET", "/v1/auth/me")["vendor"]["id"]
    client.json("POST", f"/v1/admin/vendors/{vendor_id}/wallet/topups", {"amount": "500.00", "note": "journey"},
                token=admin_token, headers={"Idempotency-Key": "journey-topup"}, expect=201)
    wallet_before = client.json("GET", "/v1/wallet")["wallet"]
    quoted_at = time.monotonic()
    quotation = client.json("POST", f"/v1/campaigns/{campaign['id']}/quote")["quotation"]
    assert quotation["recipients"] == 10_003 and quotation["wallet"]["sufficient"] is True, quotation
    eventually(lambda: client.json("GET", f"/v1/quotations/{quotation['id']}")["quotation"]["pdf_status"],
               lambda s: s == "READY", "the campaign quotation's PDF", timeout=30, pause=0.1)
    pdf_seconds = time.monotonic() - quoted_at
    status, pdf, headers = client.call("GET", f"/v1/quotations/{quotation['id']}/pdf")
    assert status == 200 and pdf.startswith(b"%PDF-"), (status, headers)
    assert pdf_seconds < 5, f"the quotation PDF was READY {pdf_seconds:.1f} s after the quote"

    client.json("POST", f"/v1/campaigns/{campaign['id']}/launch", headers={"Idempotency-Key": "journey-campaign"},
                expect=202)
    stats = eventually(lambda: client.json("GET", f"/v1/campaigns/{campaign['id']}/stats")["stats"],
                       lambda s: s["status"] == "COMPLETED", "the campaign to complete", timeout=120, pause=0.5)
    assert sum(stats["counts"].get(s, 0) for s in ("sent", "delivered", "read")) == 10_003, stats
    status, exported, _ = client.call("GET", f"/v1/campaigns/{campaign['id']}/recipients.csv")
    assert status == 200
    assert len(exported.decode().strip().splitlines()) == 1 + 10_003
    wallet_after = client.json("GET", "/v1/wallet")["wallet"]
    assert Decimal(wallet_before["balance"]) - Decimal(wallet_after["balance"]) == Decimal(stats["cost_so_far"])
    assert Decimal(wallet_after["held"]) == 0

    probe.stopped.set()
    probe.join()
    assert probe.failures == []
    slowest, request = client.slowest()
    assert slowest < SLOWEST_REQUEST_SECONDS, f"{request} took {slowest:.2f} s while tasks ran"
    assert make_run.stop() == 0

    # The second run says where the first run's note is, and no password.
    second = make_run.start()
    assert not DEMO.search(second), second
    assert "var/first-run.txt" in second, second
    assert make_run.stop() == 0
