"""End to end with real parts: a simulated customer writes through the Meta sandbox, the signed webhook reaches a
live server, the drainer stores it, the outbox delivers ``MessageReceived``, the plugin queues its answer, the sender
sends it, and the sandbox receives it inside the customer-service window it opened for that customer."""

from __future__ import annotations

import time

import pytest
import requests
from autoreplies_support import Builder, RULES
from sqlalchemy import select

from kloyst import runner, serving
from kloyst.db import tenancy
from kloyst.outbox.relay import relay_once
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from kloyst.webhooks import drainer, WEBHOOK_PATH
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.messages.sender import Sender, SenderSettings

pytestmark = pytest.mark.slow

CUSTOMER = "+4915112345678"


def test_a_customers_keyword_through_the_sandbox_is_answered_and_the_sandbox_receives_the_answer(
        registry, wsgi_app, committed_db, meta_sandbox):
    build = Builder(committed_db, registry)
    shop = build.shop("End To End Co")
    stopper = runner.Stopper()
    server = runner.start_http(wsgi_app, "127.0.0.1", 0, stopper, threads=4)
    stop_server = serving.serve_in_background(server)
    thread = drainer.start(registry, stopper.event)
    sender = Sender(registry, SenderSettings(concurrency=4, lease_seconds=60, max_retries=2,
                                             retry_base_seconds=0.05)).start()
    base = f"http://127.0.0.1:{server.effective_port}"
    try:
        requests.post(f"{base}{RULES}", json={"keyword": "hours", "match": "prefix", "text": "Mon–Fri 9–17."},
                      headers=shop.headers, timeout=10).raise_for_status()
        meta_sandbox.state.add_number(SandboxNumber(id=shop.number.meta_phone_number_id,
                                                    waba_id=shop.waba.meta_waba_id,
                                                    display_phone_number="+1 555 010 0000"))
        meta_sandbox.state.behaviour.update({"webhook_url": base + WEBHOOK_PATH})
        injected = requests.post(f"{meta_sandbox.url}/_sandbox/customers/inbound", timeout=10, json={
            "phone_number_id": shop.number.meta_phone_number_id, "from": CUSTOMER, "name": "Ada",
            "text": "Hours on Saturday?"})
        injected.raise_for_status()

        def answered() -> tuple[list[dict], list[MessageLog]]:
            relay_once(registry)  # the outbox relay: MessageReceived to the plugin, the queued answer to the sender
            sends = requests.get(f"{meta_sandbox.url}/_sandbox/sends", timeout=10).json()["sends"]
            committed_db.expire_all()
            with tenancy.unscoped(committed_db):
                sent = committed_db.scalars(select(MessageLog).where(MessageLog.vendor_id == shop.vendor_id,
                                                                     MessageLog.wamid.is_not(None))).all()
            return [s for s in sends if s["to"] == CUSTOMER.lstrip("+") and s["type"] == "text"], list(sent)

        deadline = time.monotonic() + 30
        while not all(answered()):
            assert time.monotonic() < deadline, "the sandbox never received the auto-reply"
            time.sleep(0.05)
        [send], [message] = answered()
        assert send["outcome"] == "accepted" and send["phone_number_id"] == shop.number.meta_phone_number_id
        assert message.wamid == send["id"] and message.category == "service" and message.price_micros is None
        assert build.texts(shop) == ["Mon–Fri 9–17."]
    finally:
        sender.stop(timeout=10)
        stopper.event.set()
        stop_server()
        thread.join(timeout=10)
