"""docker/healthcheck.py decides from the mode and the settings which /healthz to ask, and only 200 is healthy.

Kloyst itself is replaced here by a small HTTP server whose answer each test chooses, so
each rule is seen on its own; test_entrypoint.py runs the check against real services.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading

import pytest
from deploy_support import DOCKER, STAGING_INI
from kloyst.testing.processes import free_port

HEALTHCHECK = str(DOCKER / "healthcheck.py")


class FakeKloyst:
    """An HTTP server on 127.0.0.1 answering ``GET /healthz`` with ``status``; other paths are 404."""

    def __init__(self, status: int = 200) -> None:
        fake = self
        self.status = status
        self.paths: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                fake.paths.append(self.path)
                code = fake.status if self.path == "/healthz" else 404
                body = b'{"status": "starting"}' if code == 503 else b'{"status": "ok"}'
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_kloyst():
    servers = []

    def start(status: int = 200) -> FakeKloyst:
        servers.append(FakeKloyst(status))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def check(**env: str) -> subprocess.CompletedProcess:
    environ = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "KLOYST_INI": str(STAGING_INI), **env}
    return subprocess.run([sys.executable, HEALTHCHECK], env=environ, capture_output=True, text=True, timeout=30)


def test_the_api_is_healthy_when_its_own_port_answers_200(fake_kloyst):
    api = fake_kloyst(200)
    result = check(SERVICE_TYPE="API_GATEWAY", PORT=str(api.port))
    assert result.returncode == 0, result.stdout
    assert api.paths == ["/healthz"]
    assert result.stdout.startswith("healthy (API_GATEWAY)")


def test_any_answer_but_200_is_unhealthy_and_the_answer_is_shown(fake_kloyst):
    api = fake_kloyst(503)
    result = check(SERVICE_TYPE="API_GATEWAY", PORT=str(api.port))
    assert result.returncode == 1
    assert "503" in result.stdout and "starting" in result.stdout  # what `docker inspect` will show


def test_nothing_listening_is_unhealthy():
    result = check(SERVICE_TYPE="API_GATEWAY", PORT=str(free_port()))
    assert result.returncode == 1
    assert "did not answer" in result.stdout


def test_the_webhook_is_asked_on_the_webhook_port_not_the_api_port(fake_kloyst):
    webhook, api = fake_kloyst(200), fake_kloyst(503)
    result = check(SERVICE_TYPE="WEBHOOK", WEBHOOK_PORT=str(webhook.port), PORT=str(api.port))
    assert result.returncode == 0, result.stdout
    assert api.paths == []


def test_with_a_metrics_port_every_loop_of_the_process_must_be_alive_too(fake_kloyst):
    api, metrics = fake_kloyst(200), fake_kloyst(503)
    result = check(SERVICE_TYPE="API_GATEWAY", PORT=str(api.port), METRICS_PORT=str(metrics.port))
    assert result.returncode == 1
    assert f":{metrics.port}/healthz answered 503" in result.stdout


@pytest.mark.parametrize("mode", ["WORKER", "OUTBOX"])
def test_background_modes_are_checked_on_the_metrics_listener(fake_kloyst, mode):
    metrics = fake_kloyst(200)
    result = check(SERVICE_TYPE=mode, METRICS_PORT=str(metrics.port), METRICS_HOST="0.0.0.0")
    assert result.returncode == 0, result.stdout  # a listener on every address is asked on loopback
    assert metrics.paths == ["/healthz"]


@pytest.mark.parametrize("mode", ["WORKER", "OUTBOX"])
def test_a_background_mode_without_a_metrics_port_is_never_reported_healthy(mode):
    result = check(SERVICE_TYPE=mode)
    assert result.returncode == 1
    assert "set METRICS_PORT" in result.stdout


def test_a_proxy_in_the_environment_does_not_carry_the_probe_away(fake_kloyst):
    api = fake_kloyst(200)
    result = check(SERVICE_TYPE="API_GATEWAY", PORT=str(api.port), HTTP_PROXY="http://192.0.2.1:9",
                   http_proxy="http://192.0.2.1:9", NO_PROXY="")
    assert result.returncode == 0, result.stdout


def test_settings_kloyst_would_refuse_make_the_container_unhealthy(tmp_path):
    missing = check(SERVICE_TYPE="API_GATEWAY", KLOYST_INI=str(tmp_path / "absent.ini"))
    assert missing.returncode == 1 and "absent.ini" in missing.stdout
    no_mode = check()
    assert no_mode.returncode == 1 and "SERVICE_TYPE" in no_mode.stdout
