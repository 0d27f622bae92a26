"""Every SERVICE_TYPE starts from the same ini and stops cleanly on SIGTERM (the embedded default, SQLite)."""

import urllib.error
import urllib.request

import pytest
from e2e_support import http_json

from kloyst.testing.deployment import process_env
from kloyst.testing.processes import free_port

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["ALL", "API_GATEWAY"])
def test_http_modes_serve_health_and_exit_0_on_sigterm(embedded_ini, start_kloyst, mode):
    port = free_port()
    service = start_kloyst("run", str(embedded_ini), env=process_env(SERVICE_TYPE=mode, PORT=str(port)))
    service.wait_for_http(f"http://127.0.0.1:{port}/healthz")
    assert http_json(f"http://127.0.0.1:{port}/readyz")[0] == 200
    assert service.terminate() == 0
    assert f"{mode} stopped" in service.output()


@pytest.mark.parametrize("mode, started", [("WORKER", "worker started"), ("OUTBOX", "outbox relay started")])
def test_background_modes_start_and_exit_0_on_sigterm(embedded_ini, start_kloyst, mode, started):
    port = free_port()
    service = start_kloyst("run", str(embedded_ini), env=process_env(SERVICE_TYPE=mode, PORT=str(port)))
    service.wait_for_output(started)
    with pytest.raises(OSError):  # no HTTP in background modes
        http_json(f"http://127.0.0.1:{port}/healthz", timeout=1)
    assert service.terminate() == 0
    assert f"{mode} stopped" in service.output()


def test_webhook_mode_serves_health_on_the_webhook_port_and_nothing_of_the_api(embedded_ini, start_kloyst):
    api_port, webhook_port = free_port(), free_port()
    service = start_kloyst("run", str(embedded_ini), env=process_env(SERVICE_TYPE="WEBHOOK", PORT=str(api_port),
                                                                      WEBHOOK_PORT=str(webhook_port)))
    service.wait_for_http(f"http://127.0.0.1:{webhook_port}/healthz")
    for path in ("/v1/auth/me", "/healthzz"):
        status, body = http_json(f"http://127.0.0.1:{webhook_port}{path}")
        assert status == 404
        assert body["error"]["code"] == "not_found"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{webhook_port}/v1/auth/login", timeout=5)
    assert refused.value.headers["X-Content-Type-Options"] == "nosniff"
    with pytest.raises(OSError):
        http_json(f"http://127.0.0.1:{api_port}/healthz", timeout=1)
    assert service.terminate() == 0


def test_sigterm_stops_an_http_mode_holding_an_idle_keep_alive_connection(embedded_ini, start_kloyst):
    import http.client

    port = free_port()
    service = start_kloyst("run", str(embedded_ini), env=process_env(SERVICE_TYPE="API_GATEWAY", PORT=str(port)))
    service.wait_for_http(f"http://127.0.0.1:{port}/healthz")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/healthz")
    connection.getresponse().read()  # the connection stays open (HTTP/1.1 keep-alive)
    try:
        assert service.terminate(timeout=10) == 0
    finally:
        connection.close()


def test_an_unknown_service_type_refuses_to_start_listing_the_valid_ones(embedded_ini, start_kloyst):
    service = start_kloyst("run", str(embedded_ini), env=process_env(SERVICE_TYPE="BOGUS"))
    assert service.process.wait(timeout=60) == 2
    output = service.output()
    assert "BOGUS" in output
    for mode in ("API_GATEWAY", "WEBHOOK", "WORKER", "OUTBOX", "ALL"):
        assert mode in output


def test_two_webhook_processes_share_one_port_with_reuse_port(embedded_ini, start_kloyst):
    port = free_port()
    env = process_env(SERVICE_TYPE="WEBHOOK", WEBHOOK_PORT=str(port), PORT=str(free_port()), REUSE_PORT="true")
    first = start_kloyst("run", str(embedded_ini), env=env)
    first.wait_for_http(f"http://127.0.0.1:{port}/healthz")
    second = start_kloyst("run", str(embedded_ini), env=env)  # would fail with "address in use" without it
    second.wait_for(lambda: "listening on" in second.output(), "the second process to listen")
    assert first.terminate() == 0
    # The port is still served, by the second process alone.
    second.wait_for_http(f"http://127.0.0.1:{port}/healthz")
    assert second.terminate() == 0
