"""A conversation end to end, through real processes and the Meta sandbox over HTTP, in both deployments.

A simulated customer writes to the vendor's number (the sandbox's ``/_sandbox/customers/inbound``,
which posts Meta's signed webhook); the conversation appears in the inbox with the message unread
and the window open; the vendor reads the thread and replies; the sandbox receives the reply, and
its status webhooks bring the reply to READ in the thread; marking the conversation read sends
Meta's read receipt. Then the sandbox's own window is closed behind Kloyst's back (as when Kloyst's
clock and Meta's disagree), and the next reply comes back FAILED with Meta's 131047, shown on the
message in the thread.

Multi-process: API_GATEWAY, WEBHOOK, WORKER and OUTBOX as separate ``kloyst run`` processes on
PostgreSQL (directly, and through PgBouncer in transaction pooling) and Redis, and ``kloyst sandbox``
in its own. Embedded: one ``kloyst run
development.ini`` (SQLite, its in-process sandbox).
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from test_sqlite_smoke import DEMO

from kloyst import testing
from kloyst.db import session_scope, tenancy
from kloyst.testing.deployment import http_json, process_env, running, staging_settings
from kloyst.testing.processes import eventually, free_port

pytestmark = pytest.mark.slow

WABA = "200000000000001"  # the sandbox's default WABA (kloyst/sandbox/embedded.py)
NUMBER = "100000000000001"
CUSTOMER = "+12025550188"
PLUGINS = ("contacts", "waba", "templates", "messages", "wallet", "pricing", "media", "conversations")


class Client:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def __call__(self, method: str, path: str, body: dict | None = None, expect=(200, 201, 202)) -> dict:
        status, answer = http_json(f"{self.base}/v1{path}", body, method=method,
                                   headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        assert status in (expect if isinstance(expect, tuple) else (expect,)), f"{method} {path}: {status} {answer}"
        return answer


def sandbox_call(url: str, action: str, body: dict | None = None, method: str | None = None) -> dict:
    status, answer = http_json(f"{url}/_sandbox/{action}", body, method=method, timeout=30)
    assert status == 200, f"sandbox {action}: {status} {answer}"
    return answer


def converse(api: Client, sandbox_url: str) -> None:
    """The conversation every deployment must carry (see the module docstring)."""
    listed = eventually(lambda: api("GET", "/phone-numbers")["items"], lambda items: len(items) >= 2,
                        "the sandbox's numbers to sync", 60)
    number = next(n for n in listed if n["meta_phone_number_id"] == NUMBER)

    wrote = sandbox_call(sandbox_url, "customers/inbound", {"phone_number_id": NUMBER, "from": CUSTOMER,
                                                            "name": "Ann", "text": "Is my order on its way?"})
    [conversation] = eventually(lambda: api("GET", "/conversations?unread=true")["items"],
                                lambda items: len(items) == 1, "the inbound message's conversation", 60)
    assert conversation["phone_number_id"] == number["id"]
    assert conversation["unread_count"] == 1 and conversation["window"]["open"] is True
    assert conversation["last_message"]["preview"] == "Is my order on its way?"
    [inbound] = api("GET", f"/conversations/{conversation['id']}/messages")["items"]
    assert inbound["wamid"] == wrote["id"] and inbound["content"]["text"] == {"body": "Is my order on its way?"}

    sent = api("POST", f"/conversations/{conversation['id']}/messages",
               {"type": "text", "text": {"body": "Yes — it arrives tomorrow."}})["message"]
    assert sent["status"] == "QUEUED"

    def reply_in_thread() -> dict:
        items = api("GET", f"/conversations/{conversation['id']}/messages")["items"]
        return next(m for m in items if m["id"] == sent["id"])

    read = eventually(reply_in_thread, lambda m: m["status"] == "READ", "the reply to be read", 60)
    assert read["wamid"] and read["sent_at"] and read["delivered_at"] and read["read_at"]
    [received] = [s for s in sandbox_call(sandbox_url, "sends")["sends"] if s["id"] == read["wamid"]]
    assert received["type"] == "text" and received["to"] == CUSTOMER.lstrip("+")

    answer = api("POST", f"/conversations/{conversation['id']}/read")["conversation"]
    assert answer["unread_count"] == 0
    eventually(lambda: sandbox_call(sandbox_url, "reads")["reads"],
               lambda reads: any(r["message_id"] == wrote["id"] for r in reads), "Meta's read receipt", 60)

    # Meta's window closes behind Kloyst's back: Meta refuses the free-form message with 131047.
    sandbox_call(sandbox_url, "windows", {"phone_number_id": NUMBER, "from": CUSTOMER, "last_inbound_at": 0})
    late = api("POST", f"/conversations/{conversation['id']}/messages",
               {"type": "text", "text": {"body": "Anything else?"}})["message"]

    def late_in_thread() -> dict:
        items = api("GET", f"/conversations/{conversation['id']}/messages")["items"]
        return next(m for m in items if m["id"] == late["id"])

    failed = eventually(late_in_thread, lambda m: m["status"] == "FAILED", "Meta's refusal of the late reply", 60)
    assert failed["error"]["code"] == 131047 and "template" in failed["error"]["title"]


def test_a_conversation_through_api_webhook_worker_and_outbox_processes(tmp_path, kloyst_redis_url, kloyst_route):
    name = f"kloyst_conversations_e2e_{uuid.uuid4().hex[:8]}"
    settings = staging_settings(kloyst_route(testing.create_database(name)), kloyst_redis_url, queue="conversations")
    try:
        with running(tmp_path / "deployment", settings, numbers={NUMBER: 1000, "100000000000002": 80}, waba=WABA,
                     latency_ms=20) as up:
            deployment, sandbox, registry = up.deployment, up.sandbox, up.registry
            with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
                owner = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Conversing Co")
                for plugin in PLUGINS:
                    testing.enable_plugin(db, owner.vendor_id, plugin)
            api = Client(deployment.api_url, owner.token)
            api("POST", "/wabas", {"meta_waba_id": WABA, "name": "Sandbox", "access_token": "x"})
            converse(api, sandbox.url)
            stopped = deployment.stop()
            assert all(code == 0 for code in stopped.values()), {n: deployment[n].tail() for n in stopped}
    finally:
        testing.drop_database(name)


def test_a_conversation_on_the_embedded_default(embedded_ini, start_kloyst):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sandbox_url = re.search(r"kloyst\.meta\.graph_url = (\S+)", embedded_ini.read_text()).group(1)
    service = start_kloyst("run", str(embedded_ini), env=process_env(PORT=str(port)))
    service.wait_for_http(f"{base}/healthz")
    email, password = DEMO.search(service.stdout.read_text()).groups()
    status, login = http_json(f"{base}/v1/auth/login", {"email": email, "password": password})
    assert status == 200, login
    api = Client(base, login["access_token"])
    api("POST", "/wabas", {"meta_waba_id": WABA, "name": "Sandbox", "access_token": "any"})
    started = time.monotonic()
    converse(api, sandbox_url)
    assert time.monotonic() - started < 60
    assert service.terminate() == 0
