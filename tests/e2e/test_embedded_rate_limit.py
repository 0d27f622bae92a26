"""The general rate limit on the embedded default: `kloyst run development.ini`, no Redis, in-process buckets.

Clients hit the real server at once from several threads; exactly the limit gets through, the rest get a 429
``rate_limited`` with ``Retry-After`` and the ``RateLimit-*`` headers, and requests without a valid token are
counted per client address.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message

import pytest
from test_sqlite_smoke import DEMO

from kloyst.testing.deployment import http_json, process_env
from kloyst.testing.processes import free_port

pytestmark = pytest.mark.slow


def get(url: str, headers: dict) -> tuple[int, Message, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def at_once(url: str, headers: dict, *, clients: int, each: int) -> list[tuple[int, Message, dict]]:
    start = threading.Barrier(clients)

    def client():
        start.wait()
        return [get(url, headers) for _ in range(each)]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [answer for future in [pool.submit(client) for _ in range(clients)] for answer in future.result()]


def test_the_embedded_default_limits_concurrent_clients_in_process(embedded_ini, start_kloyst):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = start_kloyst("run", str(embedded_ini), env=process_env(
        PORT=str(port), WEBHOOK_PORT=str(free_port()), RATELIMIT_PER_USER="20/3600", RATELIMIT_PER_IP="30/3600"))
    service.wait_for_http(f"{base}/healthz")  # health checks are never limited
    email, password = DEMO.search(service.stdout.read_text()).groups()
    status, tokens = http_json(f"{base}/v1/auth/login", {"email": email, "password": password})  # 1 of the IP's 30
    assert status == 200, tokens

    answers = at_once(f"{base}/v1/vendor", {"Authorization": f"Bearer {tokens['access_token']}"}, clients=8, each=6)
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) == 20 and statuses.count(429) == 28
    refused = next(answer for answer in answers if answer[0] == 429)
    _, headers, body = refused
    assert body["error"]["code"] == "rate_limited" and body["error"]["details"]["scope"] == "user"
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Limit"] == "20" and headers["RateLimit-Remaining"] == "0"

    anonymous = at_once(f"{base}/v1/vendor", {}, clients=8, each=5)  # 401s, counted against the address
    statuses = [status for status, _, _ in anonymous]
    assert statuses.count(401) == 29 and statuses.count(429) == 11
    assert service.terminate() == 0
