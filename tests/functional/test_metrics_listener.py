"""The metrics listener: /metrics for Prometheus, /healthz for Docker, nothing else; and `kloyst run` opening it.

The liveness answer is what a WORKER or OUTBOX container's health check reads: 200 while every
loop of the process runs, 503 while starting, once one died, and while stopping.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
import webtest

from kloyst import metrics as kmetrics
from kloyst.metrics import server as metrics_server
from kloyst.metrics.liveness import thread_check
from kloyst.runner import Stopper


@pytest.fixture
def fresh():
    """Metrics of their own (not the shared app's), so liveness checks added here touch nothing else."""
    return kmetrics.Metrics()


@pytest.fixture
def listener(fresh):
    return webtest.TestApp(metrics_server.make_app(fresh))


def _thread(stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    return thread


def test_healthz_is_503_starting_until_every_loop_has_started(fresh, listener):
    fresh.liveness.add("outbox_relay", lambda: True)
    response = listener.get("/healthz", status=503)
    assert response.json == {"status": "starting", "loops": {"outbox_relay": True}}
    fresh.liveness.started = True
    assert listener.get("/healthz", status=200).json == {"status": "ok", "loops": {"outbox_relay": True}}


def test_healthz_is_503_naming_the_loop_that_died(fresh, listener):
    stop_relay, stop_drainer = threading.Event(), threading.Event()
    relay, drainer = _thread(stop_relay), _thread(stop_drainer)
    fresh.liveness.add("outbox_relay", thread_check(relay))
    fresh.liveness.add("webhook_drainer", thread_check(drainer))
    fresh.liveness.started = True
    assert listener.get("/healthz", status=200).json["status"] == "ok"
    stop_relay.set()
    relay.join(5)
    body = listener.get("/healthz", status=503).json
    assert body == {"status": "failing", "loops": {"outbox_relay": False, "webhook_drainer": True},
                    "dead": ["outbox_relay"]}
    metrics_text = listener.get("/metrics").text
    assert 'kloyst_process_loop_up{loop="outbox_relay"} 0.0' in metrics_text
    assert 'kloyst_process_loop_up{loop="webhook_drainer"} 1.0' in metrics_text
    stop_drainer.set()


def test_a_check_that_raises_counts_as_a_dead_loop(fresh, listener):
    def broken() -> bool:
        raise RuntimeError("no idea")

    fresh.liveness.add("sender", broken)
    fresh.liveness.started = True
    assert listener.get("/healthz", status=503).json["dead"] == ["sender"]


def test_healthz_is_503_while_stopping(fresh, listener):
    fresh.liveness.started = fresh.liveness.stopping = True
    assert listener.get("/healthz", status=503).json["status"] == "stopping"


def test_metrics_is_prometheus_text_with_the_apps_metrics(registry, testapp):
    testapp.get("/healthz")
    response = webtest.TestApp(metrics_server.make_app(kmetrics.of(registry))).get("/metrics")
    assert response.content_type.startswith("text/plain")
    assert "# TYPE kloyst_http_request_duration_seconds histogram" in response.text
    assert 'route="ops.healthz"' in response.text


def test_the_listener_serves_only_get_on_its_two_paths(listener):
    assert listener.get("/", status=404).json["error"]["code"] == "not_found"
    assert listener.get("/v1/auth/me", status=404).json["error"]["code"] == "not_found"
    response = listener.post("/metrics", status=405)
    assert response.headers["Allow"] == "GET"


def test_the_app_itself_serves_no_metrics(testapp):
    testapp.get("/metrics", status=404)
    testapp.get("/v1/metrics", status=404)


def test_the_listener_opens_on_the_configured_port_and_closes_with_the_stopper(registry, monkeypatch):
    from kloyst.testing.processes import free_port

    port = free_port()
    monkeypatch.setitem(registry.settings, "kloyst.metrics.port", port)
    stopper = Stopper()
    assert metrics_server.start(registry, stopper) is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"kloyst_http_request_duration_seconds" in response.read()
    finally:
        stopper.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_no_listener_when_the_port_is_0(registry):
    assert registry.settings["kloyst.metrics.port"] == 0
    assert metrics_server.start(registry, Stopper()) is None


# -- `kloyst run` -----------------------------------------------------------------------------------------

def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def run_mode(tmp_path):
    """``run_mode(mode)``: `kloyst run` of the embedded default in ``mode`` with a metrics port; (service, port)."""
    from e2e.e2e_support import KLOYST, REPO, Service

    from kloyst.testing.deployment import process_env
    from kloyst.testing.processes import free_port

    ini = tmp_path / "development.ini"
    shutil.copy(REPO / "development.ini", ini)
    started: list[Service] = []

    def run(mode: str) -> tuple[Service, int]:
        port = free_port()
        out, err = tmp_path / f"{mode}.out", tmp_path / f"{mode}.err"
        env = process_env(SERVICE_TYPE=mode, PORT=str(free_port()), WEBHOOK_PORT=str(free_port()),
                          METRICS_PORT=str(port))
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen([KLOYST, "run", str(ini)], env=env, cwd=tmp_path, stdout=stdout, stderr=stderr)
        service = Service(process, out, err)
        started.append(service)
        service.wait_for(lambda: _get_or_none(f"http://127.0.0.1:{port}/healthz") == 200,
                         f"{mode}'s metrics /healthz to answer 200")
        return service, port

    yield run
    for service in started:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait(timeout=10)


def _get_or_none(url: str) -> int | None:
    try:
        return _get(url)[0]
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("mode, loops, shared", [
    ("WORKER", {"huey_consumer", "sender", "campaignloop"}, False),
    ("OUTBOX", {"outbox_relay"}, True),
    ("WEBHOOK", {"webhook_drainer", "http"}, False),
])
def test_kloyst_run_serves_metrics_and_the_liveness_of_its_loops(run_mode, mode, loops, shared):
    service, port = run_mode(mode)
    status, body = _get(f"http://127.0.0.1:{port}/healthz")
    health = json.loads(body)
    assert (status, health["status"]) == (200, "ok")
    assert loops <= set(health["loops"]) and all(health["loops"].values())
    _, text = _get(f"http://127.0.0.1:{port}/metrics")
    for loop in loops:
        assert f'kloyst_process_loop_up{{loop="{loop}"}} 1.0'.encode() in text
    assert f'service="{mode}"'.encode() in text  # kloyst_build_info
    # Shared gauges (database, queue) only where the relay runs, so worker replicas do not repeat the queries.
    assert (b"kloyst_outbox_pending_events" in text) is shared
    assert (b"kloyst_queue_depth" in text) is shared
    assert service.terminate() == 0
    assert f"{mode} stopped" in service.output()


def _sample(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_a_new_counter_series_shows_0_in_its_first_scrape_and_its_value_from_the_next(fresh, listener):
    """Prometheus takes a series' first sample as its start: born at 3, the 3 would never count in rate()."""
    fresh.messages_reached({("v-1", "sent"): 3}, kmetrics.definitions.SENDER)
    sent = 'kloyst_message_status_total{source="sender",status="sent",vendor="v-1"}'
    assert _sample(listener.get("/metrics").text, sent) == 0.0
    assert _sample(listener.get("/metrics").text, sent) == 3.0
    fresh.messages_reached({("v-1", "sent"): 2, ("v-2", "sent"): 5}, kmetrics.definitions.SENDER)
    third = listener.get("/metrics").text
    assert _sample(third, sent) == 5.0  # a series already seen: its value at once
    assert _sample(third, sent.replace("v-1", "v-2")) == 0.0  # a new vendor's: 0 once
    assert _sample(listener.get("/metrics").text, sent.replace("v-1", "v-2")) == 5.0


def test_a_new_histogram_series_shows_0_once_in_every_sample_and_a_filtered_scrape_counts_as_seen(fresh,
                                                                                                  listener):
    fresh.observe_request("contacts.item", "GET", 404, 0.003)
    route = 'method="GET",route="contacts.item",status="404"'
    first = listener.get("/metrics", params={"name[]": "kloyst_http_request_duration_seconds_count"}).text
    assert _sample(first, f"kloyst_http_request_duration_seconds_count{{{route}}}") == 0.0
    full = listener.get("/metrics").text
    assert _sample(full, f"kloyst_http_request_duration_seconds_count{{{route}}}") == 1.0
    assert _sample(full, f'kloyst_http_request_duration_seconds_bucket{{le="0.005",{route}}}') == 1.0
