"""The embedded default as a newcomer meets it: copy development.ini, `kloyst run`, sign in, sign up.

Nothing but Python: SQLite, SqliteHuey, in-process limits, mail as files under var/mail.
"""

import email
import email.policy
import json
import re
import time
import urllib.request

import pytest
from e2e_support import http_json

from kloyst.testing.deployment import process_env
from kloyst.testing.processes import free_port

pytestmark = pytest.mark.slow

DEMO = re.compile(r"demo vendor owner (\S+@\S+) with password (\S+)")


def http_json_with_token(url: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def wait_for_mail(mail_dir, to: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == to:
                return message
        time.sleep(0.2)
    pytest.fail(f"no mail to {to} appeared in {mail_dir}")


def start_embedded(embedded_ini, start_kloyst) -> tuple[str, object]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = start_kloyst("run", str(embedded_ini), env=process_env(PORT=str(port)))
    service.wait_for_http(f"{base}/healthz")
    return base, service


def signup(base: str, mail_dir, address: str):
    status, created = http_json(f"{base}/v1/auth/signup", {"vendor_name": "Newco", "name": "Nia", "email": address,
                                                           "password": "a long enough password"})
    assert status == 202, created
    # The outbox relay and the worker run in this process: the verification mail lands in var/mail.
    message = wait_for_mail(mail_dir, address)
    assert f"{base}/" in message.get_content()  # links follow the port actually served
    return re.search(r"token=([A-Za-z0-9_-]{20,})", message.get_content()).group(1)


def test_embedded_default_serves_signs_in_the_demo_owner_and_mails_a_verification(embedded_ini, start_kloyst):
    base, service = start_embedded(embedded_ini, start_kloyst)

    output = service.stdout.read_text()
    demo = DEMO.search(output)
    assert demo, output
    demo_email, demo_password = demo.groups()
    assert f"{base}/v1/auth/login" in output  # the sign-in hint points at the port actually served

    status, tokens = http_json(f"{base}/v1/auth/login", {"email": demo_email, "password": demo_password})
    assert status == 200, tokens
    status, me = http_json_with_token(f"{base}/v1/auth/me", tokens["access_token"])
    assert status == 200 and me["user"]["email"] == demo_email

    signup(base, embedded_ini.parent / "var" / "mail", "nia@example.com")

    assert service.terminate() == 0
    assert (embedded_ini.parent / "var" / "kloyst.sqlite").exists()
    assert list((embedded_ini.parent / "var" / "log").glob("network-*.log"))


def test_embedded_default_verifies_the_mailed_token_and_signs_the_new_owner_in(embedded_ini, start_kloyst):
    base, service = start_embedded(embedded_ini, start_kloyst)
    token = signup(base, embedded_ini.parent / "var" / "mail", "nia@example.com")
    assert http_json(f"{base}/v1/auth/verify-email", {"token": token})[0] == 200
    assert http_json(f"{base}/v1/auth/login", {"email": "nia@example.com",
                                               "password": "a long enough password"})[0] == 200
    assert service.terminate() == 0
