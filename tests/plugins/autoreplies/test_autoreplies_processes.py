"""The multi-process deployment: API_GATEWAY, WEBHOOK, OUTBOX and WORKER each a ``kloyst run`` process of its own, on
PostgreSQL and Redis. A rule made through the API process answers a customer who writes through the Meta sandbox:
the WEBHOOK process stores the message, the OUTBOX process relays ``MessageReceived``, a WORKER runs the plugin's
handler and its sender sends the answer, which the sandbox receives inside the customer's window."""

from __future__ import annotations

import time
import uuid

import pytest
from autoreplies_support import Builder, RULES

from kloyst.testing.deployment import Deployment, http_json

pytestmark = pytest.mark.slow

CUSTOMER = "4915112345679"


@pytest.fixture
def deployment(tmp_path, kloyst_settings):
    deployment = Deployment.from_settings(tmp_path / "deployment", {
        **kloyst_settings, "kloyst.queue.backend": "redis", "kloyst.queue.immediate": "false",
        "kloyst.queue.name": f"autoreplies-{uuid.uuid4().hex[:8]}"})
    for name, mode in (("api", "API_GATEWAY"), ("webhook", "WEBHOOK"), ("outbox", "OUTBOX"), ("worker", "WORKER")):
        deployment.add(name, mode)
    try:
        yield deployment
    finally:
        deployment.stop()


def test_each_service_in_its_own_process_carries_a_keyword_to_its_answer(registry, committed_db, meta_sandbox,
                                                                          deployment):
    shop = Builder(committed_db, registry).shop("Processes Co")
    deployment.start()
    status, created = http_json(f"{deployment.api_url}{RULES}", {"keyword": "hours", "text": "Mon–Fri 9–17."},
                                headers=shop.headers)
    assert status == 201, created
    meta_sandbox.control("POST", "numbers", {"id": shop.number.meta_phone_number_id,
                                             "waba_id": shop.waba.meta_waba_id}, {})
    meta_sandbox.state.behaviour.update({"webhook_url": deployment.webhook_url})
    status, injected = http_json(f"{meta_sandbox.url}/_sandbox/customers/inbound", {
        "phone_number_id": shop.number.meta_phone_number_id, "from": "+" + CUSTOMER, "text": "HOURS"})
    assert status == 200, injected

    def answers() -> list[dict]:
        sends = http_json(f"{meta_sandbox.url}/_sandbox/sends")[1]["sends"]
        return [s for s in sends if s["to"] == CUSTOMER and s["type"] == "text"]

    deadline = time.monotonic() + 60
    while not answers():
        assert time.monotonic() < deadline, "no auto-reply reached the sandbox:\n" + "\n".join(
            f"--- {name}\n{service.tail(15)}" for name, service in deployment.services.items())
        time.sleep(0.1)
    [answer] = answers()
    assert answer["outcome"] == "accepted"  # inside the window the customer's message opened
    time.sleep(1)  # a second answer, were there one, would have arrived by now
    assert len(answers()) == 1
    status, listed = http_json(f"{deployment.api_url}{RULES}", headers=shop.headers)
    assert listed["items"][0]["stats"]["hits"] == 1
