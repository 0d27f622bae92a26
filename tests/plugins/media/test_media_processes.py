"""Media in the deployment people run: API_GATEWAY, WEBHOOK, WORKER and OUTBOX as separate ``kloyst run``
processes on PostgreSQL and Redis, the Meta sandbox in a process of its own, a real clamd.

An upload is answered by the API process (scanned, stored, sent to the sandbox); a customer's
document injected at the sandbox reaches the WEBHOOK process, becomes a MessageReceived through
the outbox, and is fetched, scanned and stored by the WORKER; the API process serves both.
"""

from __future__ import annotations

import base64

import pytest
import requests
from media_support import sample

from kloyst import testing
from kloyst.api import session_scope, tenancy
from kloyst.testing.clamd import EICAR
from kloyst.testing.deployment import Deployment, Sandbox, staging_settings
from kloyst.testing.deployment import running as running_deployment
from kloyst.testing.processes import eventually

pytestmark = pytest.mark.slow

WABA = "300000000000001"
NUMBER = "100000000000071"
PLUGINS = ("contacts", "waba", "templates", "messages", "media")


class Running:
    def __init__(self, deployment: Deployment, sandbox: Sandbox, headers: dict, number_id: str) -> None:
        self.deployment, self.sandbox, self.headers, self.number_id = deployment, sandbox, headers, number_id

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(f"{self.deployment.api_url}/v1{path}", params=params, headers=self.headers, timeout=30)

    def upload(self, name: str, content: bytes) -> requests.Response:
        return requests.post(f"{self.deployment.api_url}/v1/media", data={"phone_number_id": self.number_id},
                             files={"file": (name, content)}, headers=self.headers, timeout=60)


@pytest.fixture(scope="module")
def running(request, tmp_path_factory, kloyst_redis_url, media_clamd):
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"kloyst_media_{worker}"
    settings = staging_settings(testing.create_database(name), kloyst_redis_url, queue="media",
                                **{"media.clamd_address": media_clamd.address, "media.scan": "required"})
    try:
        with running_deployment(tmp_path_factory.mktemp("media-deployment"), settings, numbers={NUMBER: 80},
                                waba=WABA, commands=(("db", "upgrade"),), latency_ms=0, retry_max_interval=1.0) as up:
            with session_scope(up.registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
                owner = testing.AccountFactory(db, up.registry["kloyst.access_tokens"]).vendor("Media Processes Co")
                for plugin in PLUGINS:
                    testing.enable_plugin(db, owner.vendor_id, plugin)
            api_url = up.deployment.api_url
            created = requests.post(f"{api_url}/v1/wabas", headers=owner.headers, timeout=30,
                                    json={"meta_waba_id": WABA, "name": "Sandbox", "access_token": "sandbox-token"})
            assert created.status_code in (200, 201), created.text
            numbers = eventually(lambda: requests.get(f"{api_url}/v1/phone-numbers", headers=owner.headers,
                                                      timeout=30).json()["items"],
                                 bool, "the sandbox's number to sync", 60)
            yield Running(up.deployment, up.sandbox, owner.headers, numbers[0]["id"])
    finally:
        testing.drop_database(name)


def test_an_upload_is_checked_scanned_stored_and_sent_by_the_api_process(running):
    video = sample("video/mp4", 16_000_000)
    response = running.upload("tour.mp4", video)
    assert response.status_code == 201, response.text
    media = response.json()["media"]
    assert (media["kind"], media["mime_type"], media["status"]) == ("video", "video/mp4", "stored")
    assert running.get(f"/media/{media['id']}/content").content == video
    assert running.upload("tour.mp4", sample("video/mp4", 16_000_001)).status_code == 413
    assert running.upload("x.pdf", b"%PDF-1.4\n" + EICAR).json()["error"]["code"] == "infected"


def test_a_customers_document_is_fetched_by_the_worker_and_served_by_the_api(running):
    pdf = sample("application/pdf", 300_000)
    injected = running.sandbox.api("customers/inbound", {
        "phone_number_id": NUMBER, "from": "+4917100000002", "type": "document",
        "media": {"data_base64": base64.b64encode(pdf).decode(), "mime_type": "application/pdf",
                  "filename": "invoice.pdf"}})
    assert injected["media_id"]

    def stored():
        return [m for m in running.get("/media", direction="inbound").json()["items"] if m["status"] == "stored"]

    (media,) = eventually(stored, bool, "the customer's document to be stored", timeout=60)
    assert (media["kind"], media["mime_type"], media["size_bytes"]) == ("document", "application/pdf", len(pdf))
    served = running.get(f"/media/{media['id']}/content")
    assert served.content == pdf and served.headers["Content-Disposition"].startswith("attachment")
