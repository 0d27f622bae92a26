"""Imports on the embedded default as `make run` serves it: a real `kloyst run` of a development.ini copy.

SQLite, the huey queue in SQLite, one process, and ``imports.scan = off`` as development.ini
ships it: CSV and XLSX uploads finish (COMPLETED / PARTIAL_SUCCESS) through the API and
through ``kloyst import``, and everything says the files were not scanned. With scanning
required, an upload that waits for a scanner is scanned within seconds of clamd coming up,
with no re-upload. And the unscanned mode refuses to start where others could upload.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from imports_api_support import FINAL, ImportsApi, numbers
from imports_processing_support import csv_bytes, xlsx_bytes
from kloyst.testing.clamd import ClamdServer
from kloyst.testing.deployment import KLOYST, process_env
from kloyst.testing.processes import eventually, free_port, stop_process
from kloyst_plugins.imports import scanning, tasks

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
DEMO = re.compile(r"demo vendor owner (\S+@\S+) with password (\S+)")


class Embedded(ImportsApi):
    """``kloyst run`` of a development.ini copy in its own directory, on free ports, signed in as the demo owner."""

    def __init__(self, directory: Path, **env: str) -> None:
        self.directory = directory
        self.ini = directory / "development.ini"
        shutil.copy(REPO / "development.ini", self.ini)
        port = free_port()
        # The embedded Meta sandbox gets a free port too, so these tests run beside others.
        self.env = process_env(PORT=str(port), WEBHOOK_PORT=str(free_port()),
                               META_GRAPH_URL=f"http://127.0.0.1:{free_port()}", **env)
        self.out, self.err = directory / "kloyst.out", directory / "kloyst.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen([KLOYST, "run", str(self.ini)], env=self.env, cwd=directory, stdout=out,
                                            stderr=err)
        base = f"http://127.0.0.1:{port}"
        eventually(lambda: self._healthy(base), bool, f"kloyst run to answer on {base}/healthz", timeout=90)
        email, password = DEMO.search(self.out.read_text()).groups()
        tokens = requests.post(f"{base}/v1/auth/login", json={"email": email, "password": password}, timeout=10)
        super().__init__(base, {"Authorization": f"Bearer {tokens.json()['access_token']}"})
        self.vendor_id = self.get("/v1/auth/me")["vendor"]["id"]

    def _healthy(self, base: str) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"kloyst run exited with {self.process.returncode}:\n{self.output()}")
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def import_unscanned(self, name: str, content: bytes, columns: dict, *, timeout: float = 30) -> dict:
        """:meth:`import_file`, checking first that the upload's own answer says the file is not scanned."""
        created = self.upload(name, content)
        assert created["scan"]["result"] == scanning.NOT_SCANNED
        self.wait(created["id"], lambda job: job["status"] != "UPLOADED", "to leave UPLOADED")
        self.map_columns(created["id"], columns)
        return self.wait(created["id"], lambda job: job["status"] in FINAL, "to finish", timeout)

    def cli(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([KLOYST, *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    server = Embedded(tmp_path_factory.mktemp("embedded"))
    yield server
    server.stop()


def test_make_run_says_when_it_starts_that_uploads_are_not_scanned(embedded):
    assert "UPLOADS ARE NOT SCANNED" in embedded.output()


def test_a_csv_upload_with_a_bad_row_ends_partial_success_on_sqlite(embedded):
    rows = [[n, f"Name {i}", "fair"] for i, n in enumerate(numbers(3))] + [["not a number", "X", ""]]
    job = embedded.import_unscanned("contacts.csv", csv_bytes(["phone", "name", "labels"], rows)[0],
                               {"phone": "phone", "name": "name", "labels": "labels"})
    assert job["status"] == "PARTIAL_SUCCESS", job
    assert job["counts"] == {"total": 4, "created": 3, "updated": 0, "skipped_duplicate": 0, "rejected": 1}
    assert job["scan"]["result"] == scanning.NOT_SCANNED
    assert embedded.rejected_csv(job["id"]).splitlines()[1].startswith("4,phone,")


def test_an_xlsx_upload_ends_completed_on_sqlite(embedded):
    content = xlsx_bytes(["Mobile", "Name"], [[n, f"Sheet {i}"] for i, n in enumerate(numbers(3, start=100))])
    job = embedded.import_unscanned("contacts.xlsx", content, {"phone": "Mobile", "name": "Name"})
    assert job["status"] == "COMPLETED", job
    assert (job["file_type"], job["counts"]["created"]) == ("xlsx", 3)


def test_a_cell_with_several_numbers_gives_the_first_valid_and_keeps_the_others_on_sqlite(embedded):
    # Google Contacts' export of a contact with two phones (issue 15: the row was rejected).
    rows = [["Ada", "(415) 555-2681 ::: +1 415 555 2682"], ["Grace", "12 ; +1 415 555 2683"]]
    content = csv_bytes(["Name", "Phone 1 - Value"], rows)[0]
    created = embedded.upload("google.csv", content)
    embedded.wait(created["id"], lambda job: job["status"] != "UPLOADED", "to leave UPLOADED")
    response = requests.put(f"{embedded.base}/v1/imports/{created['id']}/mapping", headers=embedded.headers,
                            json={"columns": {"phone": "Phone 1 - Value", "name": "Name"}, "default_country": "US",
                                  "merge_strategy": "MERGE_LABELS"}, timeout=10)
    assert response.status_code == 200, response.text
    job = embedded.wait(created["id"], lambda job: job["status"] in FINAL, "to finish")
    assert job["status"] == "COMPLETED", job
    assert job["counts"]["created"] == 2 and job["counts"]["rejected"] == 0
    found = {c["mobile"]: c["attributes"] for c in embedded.get("/v1/contacts?phone=%2B14155552681")["items"]
             + embedded.get("/v1/contacts?phone=%2B14155552683")["items"]}
    assert found == {"+14155552681": {"other_phones": "+14155552682"}, "+14155552683": {"other_phones": "12"}}


def test_a_re_import_merges_labels_into_the_contacts_it_finds_on_sqlite(embedded):
    first = [[n, "spring"] for n in numbers(3, start=500)]
    again = [[n, "autumn"] for n in numbers(3, start=500)] + [[numbers(1, start=503)[0], "autumn"]]
    columns = {"phone": "phone", "labels": "labels"}
    assert embedded.import_unscanned("first.csv", csv_bytes(["phone", "labels"], first)[0], columns)["status"] == \
        "COMPLETED"
    job = embedded.import_unscanned("again.csv", csv_bytes(["phone", "labels"], again)[0], columns)
    assert job["status"] == "COMPLETED", job
    assert job["counts"] == {"total": 4, "created": 1, "updated": 3, "skipped_duplicate": 0, "rejected": 0}
    merged = embedded.get("/v1/contacts?label=spring")["items"]
    assert len(merged) == 3 and all(set(c["labels"]) >= {"spring", "autumn"} for c in merged), merged


def test_ten_thousand_rows_import_in_under_ten_seconds_while_the_api_keeps_writing_on_sqlite(embedded):
    content = csv_bytes(["phone", "name"], [[n, f"Bulk {i}"] for i, n in enumerate(numbers(10_000, start=1000))])[0]
    latencies: list[float] = []
    importing = threading.Event()

    def create_contacts() -> None:  # a vendor using the API meanwhile: each request writes
        for number in numbers(1000, start=90_000):
            if not importing.is_set():
                return
            sent = time.monotonic()
            response = requests.post(f"{embedded.base}/v1/contacts", json={"mobile": number}, headers=embedded.headers,
                                     timeout=30)
            latencies.append(time.monotonic() - sent)
            assert response.status_code == 201, response.text
            time.sleep(0.02)

    importing.set()
    writer = threading.Thread(target=create_contacts)
    writer.start()
    started = time.monotonic()
    try:
        job = embedded.import_unscanned("bulk.csv", content, {"phone": "phone", "name": "name"}, timeout=60)
    finally:
        elapsed = time.monotonic() - started
        importing.clear()
        writer.join()
    assert job["status"] == "COMPLETED" and job["counts"]["created"] == 10_000, job
    assert job["progress"]["chunks_done"] == job["chunk_count"] == 10  # development.ini: 1,000 rows a chunk
    assert elapsed < 10, f"10,000 rows took {elapsed:.1f} s"
    assert len(latencies) >= 5 and max(latencies) < 1, f"slowest POST /v1/contacts during the import: " \
                                                       f"{max(latencies):.2f} s of {len(latencies)}"


@pytest.mark.parametrize(("name", "build"), [
    ("operator.csv", lambda rows: csv_bytes(["phone", "name"], rows)[0]),
    ("operator.xlsx", lambda rows: xlsx_bytes(["phone", "name"], rows)),
], ids=["csv", "xlsx"])
def test_kloyst_import_runs_to_the_end_on_sqlite_beside_the_server(embedded, tmp_path, name, build):
    start = 20_000 if name.endswith(".csv") else 30_000
    source = tmp_path / name
    source.write_bytes(build([[n, "Op"] for n in numbers(4, start=start)] + [["12", "short"]]))
    # Run from another directory: the stored file lands under the ini file's var/, where the server looks.
    done = embedded.cli("import", str(embedded.ini), str(source), "--vendor", embedded.vendor_id,
                        "--phone-column", "phone", "--name-column", "name", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert (outcome["status"], outcome["created"], outcome["rejected"]) == ("PARTIAL_SUCCESS", 4, 1), outcome
    assert outcome["scan"] == scanning.NOT_SCANNED and "scan: not scanned" in done.stderr
    assert embedded.job(outcome["job_id"])["status"] == "PARTIAL_SUCCESS"
    assert (embedded.directory / "var" / "imports" / embedded.vendor_id).is_dir()


def test_kloyst_import_no_scan_records_the_operators_word(embedded, tmp_path):
    source = tmp_path / "trusted.csv"
    source.write_bytes(csv_bytes(["phone"], [[n] for n in numbers(2, start=40_000)])[0])
    done = embedded.cli("import", str(embedded.ini), str(source), "--vendor", embedded.vendor_id, "--no-scan",
                        cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert (outcome["status"], outcome["scan"]) == ("COMPLETED", "not scanned: --no-scan (operator CLI)")


def refused_start(ini: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([KLOYST, "run", str(ini)], env=process_env(PORT=str(free_port()), **env), cwd=cwd,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "listening" not in done.stdout
    return done


def test_the_unscanned_development_ini_refuses_to_start_when_the_api_listens_beyond_loopback(tmp_path):
    shutil.copy(REPO / "development.ini", tmp_path / "development.ini")
    done = refused_start(tmp_path / "development.ini", tmp_path, HOST="0.0.0.0",
                         META_GRAPH_URL=f"http://127.0.0.1:{free_port()}")
    assert "imports.scan = off" in done.stderr and "listens on 0.0.0.0" in done.stderr, done.stderr


def test_staging_ini_refuses_to_start_with_scanning_off(tmp_path):
    # Every variable staging.ini takes from the environment, with values that parse.
    env = dict.fromkeys(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", (REPO / "staging.ini").read_text()), "x" * 32)
    key = "k1:" + "A" * 43
    env.update(SERVICE_TYPE="API_GATEWAY", JWT_SIGNING_KEYS=key, DATA_ENCRYPTION_KEYS=key,
               DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", REDIS_URL="redis://127.0.0.1:6379/2",
               SMTP_URL="smtp://user:password@127.0.0.1:587", LOG_DIR=str(tmp_path / "log"),
               IMPORTS_STORAGE_DIR=str(tmp_path / "imports"), CLAMD_ADDRESS="tcp://clamd:3310", IMPORTS_SCAN="off")
    done = refused_start(REPO / "staging.ini", tmp_path, **env)
    assert "imports.scan = off" in done.stderr and "listens on 0.0.0.0" in done.stderr, done.stderr
    assert "https://api.staging.kloyst.com" in done.stderr and "CLAMD_ADDRESS" in done.stderr


def test_a_waiting_upload_is_scanned_within_seconds_of_clamd_coming_up_without_a_re_upload(tmp_path):
    port = free_port()
    scanner = ClamdServer(tmp_path / "clamd", port=port)
    (tmp_path / "kloyst").mkdir()
    server = Embedded(tmp_path / "kloyst", IMPORTS_SCAN="required", CLAMD_ADDRESS=scanner.address)
    try:
        assert "UPLOADS ARE NOT SCANNED" not in server.output()
        created = server.upload("later.csv", csv_bytes(["phone"], [[n] for n in numbers(2, start=50_000)])[0])
        waiting = server.wait(created["id"], lambda job: job["scan"]["attempts"] >= 2, "to ask clamd twice")
        assert waiting["status"] == "UPLOADED" and waiting["scan"]["result"].startswith(tasks.WAITING)
        assert int(re.search(r"next in (\d+)s", waiting["scan"]["result"]).group(1)) <= tasks.SCAN_RETRY_CAP_SECONDS

        scanner.start()
        up = time.monotonic()
        job = server.wait(created["id"], lambda job: job["status"] != "UPLOADED", "to be scanned", timeout=30)
        assert (job["status"], job["scan"]["result"]) == ("AWAITING_MAPPING", "clean")
        assert time.monotonic() - up < 10
    finally:
        server.stop()
        scanner.stop()


def test_rows_with_a_bsuid_and_no_number_import_as_contacts_known_by_it_on_sqlite(embedded):
    number = numbers(1, start=700)[0]
    rows = [[number, "US.5000000000000001", "Both"], ["", "US.5000000000000002", "Bsuid only"],
            ["", "US.5000000000000002", "again"], ["", "", "neither"]]
    job = embedded.import_unscanned("bsuids.csv", csv_bytes(["phone", "bsuid", "name"], rows)[0],
                                    {"phone": "phone", "bsuid": "bsuid", "name": "name"})
    assert job["counts"] == {"total": 4, "created": 2, "updated": 0, "skipped_duplicate": 1, "rejected": 1}, job
    [alone] = embedded.get("/v1/contacts?bsuid=US.5000000000000002")["items"]
    assert (alone["mobile"], alone["name"], alone["country"]) == (None, "Bsuid only", "US")
    [both] = embedded.get("/v1/contacts?bsuid=US.5000000000000001")["items"]
    assert both["mobile"] == number and both["name"] == "Both"
    again = embedded.import_unscanned("more.csv", csv_bytes(["phone", "bsuid"], [["", "US.5000000000000002"]])[0],
                                      {"phone": "phone", "bsuid": "bsuid"})
    assert again["counts"]["skipped_duplicate"] == 1 and again["counts"]["created"] == 0, again
