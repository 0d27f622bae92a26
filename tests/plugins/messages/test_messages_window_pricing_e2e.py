"""Meta's pricing settles the money end to end, through real processes and the Meta sandbox over HTTP.

Multi-process: API_GATEWAY, WEBHOOK, WORKER and OUTBOX as separate ``kloyst run`` processes on
PostgreSQL and Redis, and ``kloyst sandbox`` in its own, posting Meta's signed webhooks. A customer
writes to the vendor's number (the sandbox's ``customers/inbound``): their window is open. A utility
template sent to them is held at its full price, captured when the sandbox accepts it, and given back
when the sandbox's status webhooks report it ``free_customer_service``; the same template to a customer
who never wrote is charged. The wallet ends exactly one message poorer, and ``kloyst wallet check`` is
green. (The embedded default runs the same code in one process: test_messages_window_pricing.py.)
"""

from __future__ import annotations

import uuid

import pytest

from kloyst import testing
from kloyst.db import session_scope, tenancy
from kloyst.testing.deployment import http_json, running, staging_settings
from kloyst.testing.processes import eventually
from kloyst_plugins.wallet.ledger import Ledger

pytestmark = pytest.mark.slow

WABA = "200000000000001"
NUMBER = "100000000000001"
WROTE, SILENT = "+12025550171", "+12025550172"
PLUGINS = ("contacts", "waba", "templates", "messages", "wallet", "pricing")
FUNDS = 100_000_000


class Client:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def __call__(self, method: str, path: str, body: dict | None = None, expect=(200, 201, 202)) -> dict:
        status, answer = http_json(f"{self.base}/v1{path}", body, method=method,
                                   headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        assert status in expect, f"{method} {path}: {status} {answer}"
        return answer


def _send(api: Client, number_id: str, to: str) -> dict:
    return api("POST", "/messages", {"phone_number_id": number_id, "to": to,
                                     "template": {"name": "order_update", "language": "en_US"},
                                     "parameters": {"header": ["A-1001"], "body": ["Ann", "Monday"]}})["message"]


def _settled(api: Client, message_id: str, kinds: int) -> list[dict]:
    """The message's ledger entries, oldest first, once there are ``kinds`` of them."""
    def entries() -> list[dict]:
        items = api("GET", "/wallet/transactions?limit=100")["items"]
        return [e for e in reversed(items) if e["message_id"] == message_id or (
            e["kind"] == "HOLD" and e["reference"] == f"message:{message_id}")]
    return eventually(entries, lambda found: len(found) >= kinds, f"message {message_id}'s money to settle", 60)


def test_a_utility_template_inside_the_window_is_refunded_and_outside_it_charged_across_processes(
        tmp_path, kloyst_redis_url):
    name = f"kloyst_window_pricing_{uuid.uuid4().hex[:8]}"
    settings = staging_settings(testing.create_database(name), kloyst_redis_url, queue="window-pricing")
    try:
        with running(tmp_path / "deployment", settings, numbers={NUMBER: 1000}, waba=WABA, latency_ms=20) as up:
            deployment, sandbox, registry = up.deployment, up.sandbox, up.registry
            with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
                owner = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Window Pricing Co")
                for plugin in PLUGINS:
                    testing.enable_plugin(db, owner.vendor_id, plugin)
                Ledger(db.connection(), owner.vendor_id).topup(FUNDS, idempotency_key="e2e:funds")
            api = Client(deployment.api_url, owner.token)
            api("POST", "/wabas", {"meta_waba_id": WABA, "name": "Sandbox", "access_token": "x"})
            [number] = eventually(lambda: api("GET", "/phone-numbers")["items"], lambda items: len(items) >= 1,
                                  "the sandbox's number to sync", 60)
            api("POST", "/templates/sync", {})
            eventually(lambda: api("GET", "/templates?status=APPROVED")["items"],
                       lambda items: any(t["name"] == "order_update" for t in items), "the templates to sync", 60)

            sandbox.api("customers/inbound", {"phone_number_id": NUMBER, "from": WROTE, "name": "Ann",
                                              "text": "Where is my order?"})
            eventually(lambda: api("GET", "/contacts")["items"],
                       lambda items: any(c["last_inbound_at"] for c in items), "the customer's message", 60)

            free = _send(api, number["id"], WROTE)
            hold, capture, refund = _settled(api, free["id"], 3)
            assert (hold["kind"], capture["kind"], refund["kind"]) == ("HOLD", "CAPTURE", "REFUND")
            assert hold["amount"] == capture["amount"] == refund["amount"] != "0.000000"
            delivered = api("GET", f"/messages/{free['id']}")["message"]
            assert (delivered["pricing_category"], delivered["billable"]) == ("utility", False)

            charged = _send(api, number["id"], SILENT)
            eventually(lambda: api("GET", f"/messages/{charged['id']}")["message"],
                       lambda m: m["billable"] is True and m["status"] in ("DELIVERED", "READ"),
                       "the charged message's delivery", 60)
            assert [e["kind"] for e in _settled(api, charged["id"], 2)] == ["HOLD", "CAPTURE"]
            wallet = api("GET", "/wallet")["wallet"]
            assert wallet["held"] == "0.000000"
            assert wallet["balance"] == f"{(FUNDS - int(round(float(hold['amount']) * 10**6))) / 10**6:.6f}"

            check = deployment.cli("wallet", "check")
            assert check.returncode == 0 and "ok:" in check.stdout, check.stdout + check.stderr
            stopped = deployment.stop()
            assert all(code == 0 for code in stopped.values()), {n: deployment[n].tail() for n in stopped}
    finally:
        testing.drop_database(name)
