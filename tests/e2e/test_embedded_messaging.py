"""The embedded default sends a message end to end with no Meta account: `kloyst run development.ini`
serves the Meta sandbox, the demo vendor registers the sandbox's WABA, numbers and templates sync,
a message goes out through the sender, paid for from the demo's wallet (held when queued, captured when
Meta accepted it), and the sandbox's signed webhooks bring it to READ. Then a
campaign runs the same way: the first run gave the demo a rate card and a funded wallet, so it is
quoted, launched, sent and completed, and the wallet pays exactly what the messages cost."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from decimal import Decimal

import pytest
from e2e_support import KLOYST
from test_sqlite_smoke import DEMO

from kloyst.testing.deployment import process_env
from kloyst.testing.processes import eventually, free_port

pytestmark = pytest.mark.slow

WABA = "200000000000001"  # kloyst/sandbox/embedded.py
FAST_NUMBER = "100000000000001"


def call(method: str, url: str, token: str, body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_a_message_goes_out_and_comes_back_read_on_the_embedded_default(embedded_ini, start_kloyst):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = start_kloyst("run", str(embedded_ini), env=process_env(PORT=str(port)))
    service.wait_for_http(f"{base}/healthz")
    output = service.stdout.read_text()
    assert "Meta sandbox at http://127.0.0.1:" in output, output
    demo_email, demo_password = DEMO.search(output).groups()
    request = urllib.request.Request(f"{base}/v1/auth/login", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"email": demo_email, "password": demo_password}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        token = json.loads(response.read())["access_token"]

    status, created = call("POST", f"{base}/v1/wabas", token,
                           {"meta_waba_id": WABA, "name": "Sandbox", "access_token": "any-token"})
    assert status == 201, created
    numbers = eventually(lambda: call("GET", f"{base}/v1/phone-numbers", token)[1],
                         lambda body: len(body.get("phone_numbers", body.get("items", []))) == 2,
                         "the sandbox's two numbers to sync")
    listed = numbers.get("phone_numbers", numbers.get("items"))
    fast = next(n for n in listed if n["meta_phone_number_id"] == FAST_NUMBER)
    assert fast["throughput_mps"] == 1000

    assert call("POST", f"{base}/v1/templates/sync", token)[0] == 202
    eventually(lambda: call("GET", f"{base}/v1/templates?status=APPROVED", token)[1],
               lambda body: len(body.get("templates", body.get("items", []))) >= 2, "the templates to sync")

    status, sent = call("POST", f"{base}/v1/messages", token, {
        "phone_number_id": fast["id"], "to": "+12025550123",
        "template": {"name": "welcome", "language": "en_US"},
        "parameters": {"body": {"first_name": "Ann"}}}, headers={"Idempotency-Key": "e2e-1"})
    assert status == 202, sent
    message_id = sent["message"]["id"]
    final = eventually(lambda: call("GET", f"{base}/v1/messages/{message_id}", token)[1]["message"],
                       lambda message: message["status"] == "READ", "the message to be read")
    assert final["wamid"].startswith("wamid.") and final["pricing_category"] == "marketing"
    paid = {kind: call("GET", f"{base}/v1/wallet/transactions?kind={kind}", token)[1]["items"]
            for kind in ("HOLD", "CAPTURE")}
    assert [entry["reference"] for entry in paid["HOLD"]] == [f"message:{message_id}"]
    assert [(entry["message_id"], entry["amount"]) for entry in paid["CAPTURE"]] == [
        (message_id, paid["HOLD"][0]["amount"])]

    run_a_campaign(base, token, fast["id"])
    assert service.terminate() == 0
    check = subprocess.run([KLOYST, "wallet", "check", str(embedded_ini)], cwd=embedded_ini.parent,
                           env=process_env(), capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.startswith("ok: "), check.stderr


def run_a_campaign(base: str, token: str, phone_number_id: str) -> None:
    for index, name in enumerate(["Ann", "Bo", None]):
        body = {"mobile": f"+1202555014{index}", **({"name": name} if name else {})}
        assert call("POST", f"{base}/v1/contacts", token, body)[0] == 201
    templates = call("GET", f"{base}/v1/templates?status=APPROVED", token)[1]
    welcome = next(t for t in templates.get("templates", templates.get("items")) if t["name"] == "welcome")
    wallet_before = call("GET", f"{base}/v1/wallet", token)[1]["wallet"]
    status, created = call("POST", f"{base}/v1/campaigns", token, {
        "name": "Welcome everyone", "template_id": welcome["id"], "phone_number_id": phone_number_id,
        "audience": {"all": True}, "variables": {"first_name": {"field": "name", "default": "there"}}})
    assert status == 201, created
    campaign_id = created["campaign"]["id"]
    status, quoted = call("POST", f"{base}/v1/campaigns/{campaign_id}/quote", token)
    assert status == 200, quoted
    quotation = quoted["quotation"]
    assert quotation["recipients"] == 3 and quotation["wallet"]["sufficient"] is True
    assert Decimal(quotation["total"]) > 0
    status, launched = call("POST", f"{base}/v1/campaigns/{campaign_id}/launch", token,
                            headers={"Idempotency-Key": "e2e-campaign"})
    assert status == 202, launched
    stats = eventually(lambda: call("GET", f"{base}/v1/campaigns/{campaign_id}/stats", token)[1]["stats"],
                       lambda s: s["status"] == "COMPLETED", "the campaign to complete")
    assert sum(stats["counts"].get(s, 0) for s in ("sent", "delivered", "read")) == 3, stats
    wallet_after = call("GET", f"{base}/v1/wallet", token)[1]["wallet"]
    cost = Decimal(stats["cost_so_far"])
    assert cost == Decimal(quotation["total"])
    assert Decimal(wallet_before["balance"]) - Decimal(wallet_after["balance"]) == cost
    assert Decimal(wallet_after["held"]) == 0 and Decimal(stats["held_remaining"]) == 0
