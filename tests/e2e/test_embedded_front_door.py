"""The README's front door on the embedded default, walked as a newcomer walks it.

`kloyst run development.ini` in an empty directory: the first run prints the demo owner's
password; a new vendor signs up and confirms its address by clicking the mailed link (a page, then
its button); it turns its plugins on, registers a sandbox WABA of its own beside the demo vendor's,
polls until the numbers are synced, is refused (402) a message its empty wallet cannot pay for, and once
a platform admin (``kloyst create-admin``) has topped the wallet up, sends one that comes back READ. A second run of the
same directory says where the demo owner's note is, and prints no password.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import re
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from e2e_support import KLOYST
from test_sqlite_smoke import DEMO

from kloyst.testing.deployment import http_json, process_env
from kloyst.testing.processes import eventually, free_port

pytestmark = pytest.mark.slow

PASSWORD = "a long enough password"
LINK = re.compile(r"(http://\S+/verify-email\?token=[A-Za-z0-9_-]+)")
HIDDEN_TOKEN = re.compile(r'name="token" value="([^"]+)"')


def mailed_link(mail_dir, to: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == to:
                return LINK.search(message.get_content()).group(1)
        time.sleep(0.2)
    pytest.fail(f"no mail to {to} appeared in {mail_dir}")


def click(link: str) -> str:
    """What a browser does with the mailed link: open the page, press its button (a form POST)."""
    with urllib.request.urlopen(link, timeout=10) as page:
        assert page.status == 200 and page.headers.get_content_type() == "text/html"
        token = html.unescape(HIDDEN_TOKEN.search(page.read().decode()).group(1))
    form = urllib.parse.urlencode({"token": token}).encode()
    target = urllib.parse.urlsplit(link)._replace(query="").geturl()
    with urllib.request.urlopen(urllib.request.Request(target, data=form, method="POST"), timeout=10) as done:
        return done.read().decode()


def sign_in(base: str, address: str, password: str) -> dict:
    status, tokens = http_json(f"{base}/v1/auth/login", {"email": address, "password": password})
    assert status == 200, tokens
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def api(base: str, method: str, path: str, auth: dict, body: dict | None = None, **headers) -> tuple[int, dict]:
    return http_json(f"{base}/v1{path}", body, method=method, headers={**auth, **headers})


def turn_every_plugin_on(base: str, auth: dict) -> None:
    """What a new vendor does first (README): PUT /v1/plugins/<name>, requirements before what needs them."""
    wanted = [p["name"] for p in api(base, "GET", "/plugins", auth)[1]["items"] if not p["enabled"]]
    for _ in range(len(wanted)):
        wanted = [name for name in wanted if api(base, "PUT", f"/plugins/{name}", auth)[0] != 200]
    assert wanted == [], f"could not enable {wanted}"


def register_and_wait_for_numbers(base: str, auth: dict, meta_waba_id: str) -> list[dict]:
    status, created = api(base, "POST", "/wabas", auth, {"meta_waba_id": meta_waba_id, "name": "Sandbox",
                                                          "access_token": "any"})
    assert status == 201, created
    assert created["sync"] == "queued" and created["waba"]["sync_status"] == "queued"
    waba_id = created["waba"]["id"]
    synced = eventually(lambda: api(base, "GET", f"/wabas/{waba_id}", auth)[1]["waba"],
                        lambda waba: waba["sync_status"] != "queued", "the WABA's numbers to sync", timeout=30)
    assert synced["sync_status"] == "synced", synced
    return api(base, "GET", f"/phone-numbers?waba_id={waba_id}", auth)[1]["items"]


def fund(base: str, ini, env: dict, vendor_id: str, amount: str) -> None:
    """What the platform does when a vendor pays: a platform admin (created by the CLI) tops its wallet up."""
    created = subprocess.run([KLOYST, "create-admin", str(ini), "--email", "ops@example.com"], cwd=ini.parent,
                             env={**env, "KLOYST_ADMIN_PASSWORD": PASSWORD}, capture_output=True, text=True,
                             timeout=60)
    assert created.returncode == 0, created.stderr
    admin = sign_in(base, "ops@example.com", PASSWORD)
    status, moved = api(base, "POST", f"/admin/vendors/{vendor_id}/wallet/topups", admin, {"amount": amount},
                        **{"Idempotency-Key": f"payment-{vendor_id}"})
    assert status == 201, moved


def test_a_new_vendor_confirms_by_the_mailed_link_gets_its_own_waba_and_messages(embedded_ini, start_kloyst):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = process_env(PORT=str(port), WEBHOOK_PORT=str(free_port()))
    service = start_kloyst("run", str(embedded_ini), env=env)
    service.wait_for_http(f"{base}/healthz")
    demo_email, demo_password = DEMO.search(service.stdout.read_text()).groups()

    status, created = http_json(f"{base}/v1/auth/signup", {"vendor_name": "Newco", "name": "Nia",
                                                           "email": "nia@example.com", "password": PASSWORD})
    assert status == 202, created
    link = mailed_link(embedded_ini.parent / "var" / "mail", "nia@example.com")
    assert link.startswith(f"{base}/verify-email?token=")
    assert "nia@example.com is confirmed" in click(link)
    nia = sign_in(base, "nia@example.com", PASSWORD)
    turn_every_plugin_on(base, nia)

    demo_numbers = register_and_wait_for_numbers(base, sign_in(base, demo_email, demo_password), "200000000000001")
    numbers = register_and_wait_for_numbers(base, nia, "200000000000002")
    assert len(numbers) == len(demo_numbers) == 2
    assert not {n["meta_phone_number_id"] for n in numbers} & {n["meta_phone_number_id"] for n in demo_numbers}

    assert api(base, "POST", "/templates/sync", nia)[0] == 202
    eventually(lambda: api(base, "GET", "/templates?status=APPROVED", nia)[1]["items"],
               lambda items: {t["name"] for t in items} >= {"welcome"}, "Nia's templates to sync", timeout=30)
    fast = next(n for n in numbers if n["throughput_mps"] == 1000)
    send = {"phone_number_id": fast["id"], "to": "+12025550123", "template": {"name": "welcome", "language": "en_US"},
            "parameters": {"body": {"first_name": "Ann"}}}
    status, refused = api(base, "POST", "/messages", nia, send, **{"Idempotency-Key": "front-door-0"})
    assert status == 402 and refused["error"]["code"] == "insufficient_funds", refused  # a new wallet is empty
    assert refused["error"]["details"]["available"] == "0.000000"
    fund(base, embedded_ini, env, api(base, "GET", "/auth/me", nia)[1]["vendor"]["id"], "10.00")
    status, sent = api(base, "POST", "/messages", nia, send, **{"Idempotency-Key": "front-door-1"})
    assert status == 202, sent
    message = eventually(lambda: api(base, "GET", f"/messages/{sent['message']['id']}", nia)[1]["message"],
                         lambda m: m["status"] == "READ", "Nia's message to be read", timeout=60)
    times = [dt.datetime.fromisoformat(message[key]) for key in ("sent_at", "delivered_at", "read_at")]
    assert times == sorted(times), message  # never a status before the one it follows
    assert service.terminate() == 0

    again = start_kloyst("run", str(embedded_ini), env=env)
    again.wait_for_http(f"{base}/healthz")
    output = again.stdout.read_text()
    assert "First run" not in output and demo_password not in output, output
    assert f"{demo_email}: its password and sign-in line are in" in output and "first-run.txt" in output
    assert demo_password in (embedded_ini.parent / "var" / "first-run.txt").read_text()
    assert again.terminate() == 0
