"""Media on the embedded default as `make run` serves it: a real `kloyst run` of a development.ini copy.

SQLite, one process, the Meta sandbox in-process (over real HTTP on its own port), and a real
clamd (``MEDIA_SCAN=required``; development.ini itself ships ``media.scan = off``). An upload
is checked, scanned and sent to the sandbox; a customer's image injected at the sandbox comes in
through Meta's webhook, the messages plugin and MessageReceived, and is fetched, scanned, stored
and served — the whole path in one process on SQLite.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from media_support import sample

from kloyst.sandbox.embedded import DEMO_WABA_ID
from kloyst.testing.clamd import EICAR
from kloyst.testing.deployment import KLOYST, process_env
from kloyst.testing.processes import eventually, free_port, stop_process

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
DEMO = re.compile(r"demo vendor owner (\S+@\S+) with password (\S+)")


class Embedded:
    """``kloyst run`` of a development.ini copy in its own directory, on free ports, signed in as the demo owner."""

    def __init__(self, directory: Path, **env: str) -> None:
        ini = directory / "development.ini"
        shutil.copy(REPO / "development.ini", ini)
        port = free_port()
        self.sandbox = f"http://127.0.0.1:{free_port()}"
        self.out, self.err = directory / "kloyst.out", directory / "kloyst.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [KLOYST, "run", str(ini)], cwd=directory, stdout=out, stderr=err,
                env=process_env(PORT=str(port), WEBHOOK_PORT=str(free_port()), META_GRAPH_URL=self.sandbox, **env))
        self.base = f"http://127.0.0.1:{port}"
        eventually(self._healthy, bool, f"kloyst run to answer on {self.base}/healthz", timeout=90)
        email, password = DEMO.search(self.out.read_text()).groups()
        tokens = requests.post(f"{self.base}/v1/auth/login", json={"email": email, "password": password}, timeout=10)
        self.headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"kloyst run exited with {self.process.returncode}:\n{self.output()}")
        try:
            return requests.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(f"{self.base}{path}", params=params, headers=self.headers, timeout=30)

    def upload(self, number_id: str, name: str, content: bytes) -> requests.Response:
        return requests.post(f"{self.base}/v1/media", data={"phone_number_id": number_id},
                             files={"file": (name, content)}, headers=self.headers, timeout=60)

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, media_clamd):
    server = Embedded(tmp_path_factory.mktemp("embedded"), MEDIA_SCAN="required", IMPORTS_SCAN="required",
                      CLAMD_ADDRESS=media_clamd.address)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def number(embedded) -> dict:
    """The first number of the demo vendor's sandbox WABA, registered as a reader of the README does."""
    created = requests.post(f"{embedded.base}/v1/wabas", headers=embedded.headers, timeout=30,
                            json={"meta_waba_id": DEMO_WABA_ID, "name": "Sandbox", "access_token": "any-token"})
    assert created.status_code == 201, created.text
    return eventually(lambda: embedded.get("/v1/phone-numbers").json()["items"], bool,
                      "the sandbox's numbers to sync")[0]


def test_an_upload_is_scanned_stored_sent_to_the_sandbox_and_served_on_sqlite(embedded, number):
    photo = sample("image/jpeg", 5_000_000)
    response = embedded.upload(number["id"], "catalogue.jpg", photo)
    assert response.status_code == 201, response.text
    media = response.json()["media"]
    assert (media["status"], media["kind"], media["scan_result"]) == ("stored", "image", "clean")
    assert media["meta_media_id"]
    info = requests.get(f"{embedded.sandbox}/v23.0/{media['meta_media_id']}", timeout=10,
                        headers={"Authorization": "Bearer sandbox"}).json()
    assert int(info["file_size"]) == len(photo)
    assert embedded.get(f"/v1/media/{media['id']}/content").content == photo


def test_refusals_on_sqlite_too_size_type_and_virus(embedded, number):
    assert embedded.upload(number["id"], "big.jpg", sample("image/jpeg", 5_000_001)).status_code == 413
    assert embedded.upload(number["id"], "a.gif", b"GIF89a" + b"\0" * 10).status_code == 422
    infected = embedded.upload(number["id"], "x.pdf", b"%PDF-1.4\n" + EICAR)
    assert infected.status_code == 422 and infected.json()["error"]["code"] == "infected"


def test_a_customers_image_comes_in_through_the_webhook_and_is_stored_and_served_on_sqlite(embedded, number):
    photo = sample("image/png", 40_000)
    injected = requests.post(f"{embedded.sandbox}/_sandbox/customers/inbound", timeout=10, json={
        "phone_number_id": number["meta_phone_number_id"], "from": "+4917100000001", "name": "Ada", "type": "image",
        "media": {"data_base64": base64.b64encode(photo).decode(), "mime_type": "image/png"}})
    assert injected.status_code == 200, injected.text

    def stored():
        items = embedded.get("/v1/media", direction="inbound").json()["items"]
        return [m for m in items if m["status"] == "stored"]

    (media,) = eventually(stored, bool, "the inbound image to be stored", timeout=30)
    assert (media["kind"], media["mime_type"], media["size_bytes"]) == ("image", "image/png", len(photo))
    assert media["inbound_id"] is not None
    assert embedded.get(f"/v1/media/{media['id']}/content").content == photo
