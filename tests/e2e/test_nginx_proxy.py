"""Kloyst behind the shipped nginx config (nginx/), on loopback: what a client on the internet gets.

Two ``kloyst run`` processes, API_GATEWAY and WEBHOOK, share one SQLite database (the embedded
default) as the staging containers share PostgreSQL, and a real nginx runs the shipped site in front
of them, TLS included; only paths and ports differ (kloyst.testing.nginx lists them). One recording
HTTP server stands in for Grafana and Dozzle and shows what nginx sends upstream.

Clients connect from their own loopback addresses (127.0.0.2, 127.0.0.3…) while nginx reaches the
upstreams from 127.0.0.1, so an address Kloyst logs or throttles can only have come through the
X-Forwarded-For nginx wrote.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import http.client
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from e2e_support import KLOYST, REPO, Service

from kloyst.config import CORE_SETTINGS
from kloyst.http.tweens import SECURITY_HEADERS
from kloyst.testing.deployment import process_env
from kloyst.testing.nginx import SITE, NginxPrefix, parse, render, server, size_bytes
from kloyst.testing.processes import free_port
from kloyst.webhooks import MAX_BODY_BYTES as WEBHOOK_BODY_LIMIT

pytestmark = pytest.mark.slow

API_HOST = "api.staging.kloyst.com"
LOGS_HOST = "logs.staging.kloyst.com"
DOZZLE_HOST = "dozzle.staging.kloyst.com"
USER, PASSWORD = "ops", secrets.token_urlsafe(16)
HSTS = SECURITY_HEADERS["Strict-Transport-Security"]  # nginx sends the app's own value
JSON_BODY_LIMIT = next(setting.default for setting in CORE_SETTINGS if setting.key == "kloyst.http.max_body_bytes")


class RecordingUpstream:
    """Stands in for Grafana and Dozzle: answers every GET with 200 and keeps each request's path and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, object]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
                recorder.requests.append((self.path, self.headers))
                body = b"upstream"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def headers_for(self, path: str) -> list:
        return [headers for seen, headers in self.requests if seen == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    nginx: NginxPrefix
    directory: Path  # the Kloyst processes' working directory: var/log holds their network logs
    app_secret: str
    upstream: RecordingUpstream
    api_port: int


def _start(directory: Path, mode: str, env: dict[str, str]) -> Service:
    stdout, stderr = directory / f"{mode}.out", directory / f"{mode}.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen([KLOYST, "run", "development.ini"], env={**env, "SERVICE_TYPE": mode},
                                   cwd=directory, stdout=out, stderr=err)
    return Service(process, stdout, stderr)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kloyst")
    shutil.copy(REPO / "development.ini", directory / "development.ini")
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(directory / "development.ini")
    api_port, webhook_port = free_port(), free_port()
    # THROTTLE_LOGIN_PER_IP low, so the throttling test needs three requests rather than twenty-one.
    env = process_env(PORT=str(api_port), WEBHOOK_PORT=str(webhook_port), TRUSTED_PROXY="127.0.0.1",
                      THROTTLE_LOGIN_PER_IP="2/60")
    upstream = RecordingUpstream()
    services: list[Service] = []
    prefix = None
    try:
        try:
            prefix = render(REPO / "nginx", tmp_path_factory.mktemp("nginx"), users={USER: PASSWORD},
                            upstreams={3000: api_port, 3002: webhook_port, 3003: upstream.port, 8888: upstream.port})
        except RuntimeError as exc:  # nginx missing: a failure that says how to install it, never a skip
            pytest.fail(str(exc))
        # One after the other: the first process creates the SQLite database the second one opens.
        for mode, port in (("API_GATEWAY", api_port), ("WEBHOOK", webhook_port)):
            services.append(_start(directory, mode, env))
            services[-1].wait_for_http(f"http://127.0.0.1:{port}/healthz")
        try:
            prefix.start()
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield Stack(prefix, directory, ini["app:main"]["kloyst.meta.app_secret"], upstream, api_port)
    finally:
        if prefix is not None:
            prefix.stop()
        for service in services:
            if service.process.poll() is None:
                service.terminate()
        upstream.close()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    tls: tuple[str, str]  # protocol version and cipher suite negotiated

    def json(self) -> dict:
        return json.loads(self.body)


def https(nginx: NginxPrefix, method: str, path: str, *, host: str = API_HOST, body: bytes | None = None,
          headers: dict[str, str] | None = None, client: str = "127.0.0.1",
          tls_max: ssl.TLSVersion | None = None) -> Reply:
    """One request to nginx's TLS port from ``client``, for ``host`` (SNI, Host header and certificate check)."""
    context = ssl.create_default_context(cafile=str(nginx.certificate))
    if tls_max is not None:
        context.maximum_version = tls_max
    raw = socket.create_connection(("127.0.0.1", nginx.https_port), timeout=30, source_address=(client, 0))
    connection = http.client.HTTPSConnection(host, nginx.https_port, timeout=30)
    connection.sock = context.wrap_socket(raw, server_hostname=host)
    tls = (connection.sock.version(), connection.sock.cipher()[0])  # before http.client closes it on "close"
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read(), tls)
    finally:
        connection.close()


def network_log(stack: Stack) -> list[dict]:
    """Every line both Kloyst processes wrote to their network log so far."""
    return [json.loads(line) for path in sorted((stack.directory / "var" / "log").glob("network-*.log"))
            for line in path.read_text().splitlines()]


def network_line(stack: Stack, request_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [line for line in network_log(stack) if line.get("request_id") == request_id]
        if found:
            return found[0]
        time.sleep(0.05)
    pytest.fail(f"no network-log line with request_id {request_id}")


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def login(stack: Stack, email: str, client: str, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"email": email, "password": "not-the-password-1"}).encode()
    return https(stack.nginx, "POST", "/v1/auth/login", body=body, client=client,
                 headers={"Content-Type": "application/json", **(headers or {})})


def test_api_request_reaches_the_api_process_under_the_clients_own_address(stack):
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9", "X-Forwarded-Host": "evil.example",
               # waitress answers 400 to a forwarded scheme other than http or https: a 401 below also
               # shows that nginx replaced this header rather than passing it on.
               "X-Forwarded-Proto": "gopher", "X-Forwarded-Port": "1"}
    reply = login(stack, "nobody@example.com", client="127.0.0.2", headers=spoofed)
    assert reply.status == 401, reply.body
    assert reply.json()["error"]["code"] == "invalid_credentials"
    line = network_line(stack, reply.headers["X-Request-ID"])
    assert line["service"] == "API_GATEWAY"
    assert line["path"] == "/v1/auth/login"
    assert line["client"] == "127.0.0.2"


def test_login_throttling_counts_each_client_address_separately_behind_nginx(stack):
    statuses = [login(stack, f"throttled-{n}@example.com", client="127.0.0.3").status for n in range(3)]
    assert statuses == [401, 401, 429]
    assert login(stack, "throttled-3@example.com", client="127.0.0.4").status == 401


def test_nginx_writes_every_forwarding_header_itself(stack):
    # The API host includes the same kloyst-proxy.conf; the recording upstream shows exactly what it sends.
    path = f"/probe-{uuid.uuid4().hex}"
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9", "X-Forwarded-Proto": "http",
               "X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "1", "Forwarded": "for=203.0.113.9"}
    credentials = {"Authorization": basic_auth(USER, PASSWORD)}
    reply = https(stack.nginx, "GET", path, host=LOGS_HOST, client="127.0.0.5", headers={**spoofed, **credentials})
    assert reply.status == 200, reply.body
    [seen] = stack.upstream.headers_for(path)
    assert seen["Host"] == LOGS_HOST
    assert seen["X-Forwarded-For"] == "127.0.0.5"
    assert seen["X-Real-IP"] == "127.0.0.5"
    assert seen["X-Forwarded-Proto"] == "https"
    assert seen["X-Forwarded-Host"] == LOGS_HOST
    assert seen["X-Forwarded-Port"] == str(stack.nginx.https_port)
    assert seen["Forwarded"] is None
    # Grafana would read the basic-auth credentials as a login of its own.
    assert seen["Authorization"] is None


@pytest.mark.parametrize("host", [LOGS_HOST, DOZZLE_HOST])
def test_monitoring_hosts_answer_only_with_basic_auth_credentials(stack, host):
    path = f"/probe-{uuid.uuid4().hex}"
    anonymous = https(stack.nginx, "GET", path, host=host)
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = https(stack.nginx, "GET", path, host=host, headers={"Authorization": basic_auth(USER, "wrong")})
    assert wrong.status == 401
    assert stack.upstream.headers_for(path) == []
    allowed = https(stack.nginx, "GET", path, host=host, headers={"Authorization": basic_auth(USER, PASSWORD)})
    assert (allowed.status, allowed.body) == (200, b"upstream")
    assert [seen["Host"] for seen in stack.upstream.headers_for(path)] == [host]


def test_websocket_upgrade_is_passed_to_grafana(stack):
    path = f"/api/live/ws-{uuid.uuid4().hex}"
    headers = {"Authorization": basic_auth(USER, PASSWORD), "Upgrade": "websocket",
               "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert https(stack.nginx, "GET", path, host=LOGS_HOST, headers=headers).status == 200
    [seen] = stack.upstream.headers_for(path)
    assert seen["Upgrade"] == "websocket"
    assert seen["Connection"] == "upgrade"


def test_signed_webhook_reaches_the_webhook_process_byte_for_byte(stack):
    # Not ASCII on purpose: the signature covers the raw bytes, so any re-encoding on the way would break it.
    body = json.dumps({"object": "whatsapp_business_account", "entry": [], "note": "Olá ✓ 👋"},
                      ensure_ascii=False).encode()
    signature = "sha256=" + hmac.new(stack.app_secret.encode(), body, hashlib.sha256).hexdigest()
    reply = https(stack.nginx, "POST", "/webhook/whatsapp", body=body,
                  headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    assert reply.status == 200, reply.body
    assert reply.json() == {"ok": True}
    assert network_line(stack, reply.headers["X-Request-ID"])["service"] == "WEBHOOK"


def test_webhook_with_a_wrong_signature_is_refused_by_kloyst(stack):
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    forged = "sha256=" + hmac.new(b"not-the-app-secret", body, hashlib.sha256).hexdigest()
    reply = https(stack.nginx, "POST", "/webhook/whatsapp", body=body,
                  headers={"Content-Type": "application/json", "X-Hub-Signature-256": forged})
    assert reply.status == 401
    assert reply.json()["error"]["code"] == "invalid_signature"
    assert network_line(stack, reply.headers["X-Request-ID"])["service"] == "WEBHOOK"


def test_upload_at_the_limit_reaches_kloyst_and_one_byte_more_is_refused_by_nginx(stack):
    site = parse((REPO / "nginx" / SITE).read_text())
    limit = size_bytes(server(site, API_HOST).child("location", "=", "/v1/imports").value("client_max_body_size"))
    headers = {"Content-Type": "multipart/form-data; boundary=kloyst"}

    at_limit = https(stack.nginx, "POST", "/v1/imports", body=bytes(limit), headers=headers)
    # Kloyst read the whole body and refused the missing token, not the size.
    assert at_limit.status == 401, at_limit.body
    assert network_line(stack, at_limit.headers["X-Request-ID"])["bytes_in"] == limit

    uploads_seen = sum(line["path"] == "/v1/imports" for line in network_log(stack))
    over = https(stack.nginx, "POST", "/v1/imports", body=bytes(limit + 1), headers=headers)
    assert over.status == 413
    assert over.json()["error"]["code"] == "payload_too_large"
    assert "X-Request-ID" not in over.headers
    assert sum(line["path"] == "/v1/imports" for line in network_log(stack)) == uploads_seen


@pytest.mark.parametrize("path, limit, service", [("/v1/auth/login", JSON_BODY_LIMIT, "API_GATEWAY"),
                                                   ("/webhook/whatsapp", WEBHOOK_BODY_LIMIT, "WEBHOOK")])
def test_a_body_just_over_kloysts_limit_gets_kloysts_own_413(stack, path, limit, service):
    reply = https(stack.nginx, "POST", path, body=bytes(limit + 1), headers={"Content-Type": "application/json"})
    assert reply.status == 413
    assert reply.json()["error"]["details"] == {"limit_bytes": limit}
    assert network_line(stack, reply.headers["X-Request-ID"])["service"] == service


def test_a_stopped_kloyst_gives_clients_a_json_503(tmp_path):
    # Nothing listens on the upstream ports: what clients get between two containers during a deploy.
    prefix = render(REPO / "nginx", tmp_path / "nginx", users={USER: PASSWORD},
                    upstreams={3000: free_port(), 3002: free_port()})
    prefix.start()
    try:
        for path in ("/v1/auth/me", "/webhook/whatsapp"):
            reply = https(prefix, "GET", path)
            assert reply.status == 503
            assert reply.json()["error"]["code"] == "service_unavailable"
    finally:
        prefix.stop()


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/", "/api/v1/auth/login", "/.env"])
def test_metrics_and_paths_outside_the_api_are_answered_by_nginx_alone(stack, path):
    reply = https(stack.nginx, "GET", path)
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert "X-Request-ID" not in reply.headers
    assert not [line for line in network_log(stack) if line["path"] == path]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_are_answered_by_the_api_process(stack, path):
    reply = https(stack.nginx, "GET", path)
    assert reply.status == 200, reply.body
    assert network_line(stack, reply.headers["X-Request-ID"])["service"] == "API_GATEWAY"


def test_plain_http_redirects_to_https_except_certbot_challenges(stack):
    connection = http.client.HTTPConnection("127.0.0.1", stack.nginx.http_port, timeout=10)
    connection.request("GET", "/v1/auth/me?page=2", headers={"Host": API_HOST})
    response = connection.getresponse()
    assert response.status == 301
    assert response.headers["Location"] == f"https://{API_HOST}/v1/auth/me?page=2"
    connection.close()

    token = secrets.token_urlsafe(16)
    challenge = stack.nginx.acme_webroot / ".well-known" / "acme-challenge" / token
    challenge.parent.mkdir(parents=True, exist_ok=True)
    challenge.write_text("key-authorization")
    connection = http.client.HTTPConnection("127.0.0.1", stack.nginx.http_port, timeout=10)
    connection.request("GET", f"/.well-known/acme-challenge/{token}", headers={"Host": LOGS_HOST})
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"key-authorization")
    connection.close()


def test_tls_is_1_3_or_1_2_with_forward_secret_aead_suites(stack):
    assert https(stack.nginx, "GET", "/healthz").tls[0] == "TLSv1.3"
    version, cipher = https(stack.nginx, "GET", "/healthz", tls_max=ssl.TLSVersion.TLSv1_2).tls
    assert version == "TLSv1.2"
    assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_every_answer_has_one_hsts_header_and_no_nginx_version(stack, path):
    reply = https(stack.nginx, "GET", path)  # the app's answer, then one nginx writes alone
    assert reply.headers.get_all("Strict-Transport-Security") == [HSTS]
    assert reply.headers["Server"] == "nginx"


def test_access_log_is_json_with_request_time_and_kloysts_request_id_but_no_query(stack):
    reply = https(stack.nginx, "GET", "/healthz?token=do-not-log-me")
    request_id = reply.headers["X-Request-ID"]
    log = stack.nginx.logs / "kloyst-staging.access.log"
    deadline = time.monotonic() + 5
    while request_id not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    [line] = [line for line in lines if line["request_id"] == request_id]
    assert (line["host"], line["method"], line["path"], line["status"]) == (API_HOST, "GET", "/healthz", 200)
    assert isinstance(line["request_time"], (int, float))
    assert line["upstream"] == f"127.0.0.1:{stack.api_port}"
    assert "do-not-log-me" not in log.read_text()
