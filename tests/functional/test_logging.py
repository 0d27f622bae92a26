"""Logs: one JSON line per request in the network log, errors with tracebacks, levels and retention from settings."""

import datetime as dt
import json
import logging
import re
import urllib.request
import uuid
from pathlib import Path

import pytest

from kloyst import logs, make_configurator
from kloyst.runner import Stopper, start_http
from kloyst.serving import serve_in_background
from kloyst.testing import TEST_PASSWORD


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def records(directory, kind: str) -> list[dict]:
    path = Path(directory) / f"{kind}-{today().isoformat()}.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def all_log_text(directory) -> str:
    return "".join(p.read_text() for p in Path(directory).glob("*.log"))


@pytest.fixture
def log_dir(registry):
    """The test application's log directory, with logging pointed at it: any test that built an application of
    its own (a SQLite one, another ini) configured logging for that one, and logging is process-wide."""
    logs.configure(registry.settings, service=registry.settings["kloyst.service_type"])
    return registry.settings["kloyst.log.dir"]


@pytest.fixture
def restore_logging(registry):
    """Tests that reconfigure logging put the test application's configuration back afterwards."""
    yield
    logs.configure(registry.settings, service=registry.settings["kloyst.service_type"])


def test_each_request_is_one_json_line_in_the_network_log(testapp, log_dir):
    request_id = f"test-{uuid.uuid4().hex}"
    testapp.get("/healthz", headers={"X-Request-ID": request_id})
    [entry] = [r for r in records(log_dir, "network") if r.get("request_id") == request_id]
    assert entry["kind"] == "network"
    assert entry["method"] == "GET"
    assert entry["path"] == "/healthz"
    assert entry["status"] == 200
    assert entry["route"] == "ops.healthz"
    assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] >= 0
    assert dt.datetime.fromisoformat(entry["ts"]).tzinfo is not None


def test_error_responses_are_logged_with_their_status(testapp, log_dir):
    request_id = f"test-{uuid.uuid4().hex}"
    testapp.get("/v1/auth/me", headers={"X-Request-ID": request_id}, status=401)
    [entry] = [r for r in records(log_dir, "network") if r.get("request_id") == request_id]
    assert entry["status"] == 401


def test_logs_never_contain_the_authorization_header_or_the_body(testapp, accounts, log_dir):
    account = accounts.vendor()
    secret_password = f"pw-{uuid.uuid4().hex}"
    testapp.get("/v1/auth/me", headers=account.headers)
    testapp.post_json("/v1/auth/login", {"email": account.user.email, "password": secret_password}, status=401)
    testapp.post_json("/v1/auth/login", {"email": account.user.email, "password": TEST_PASSWORD})
    text = all_log_text(log_dir)
    assert account.token not in text
    assert secret_password not in text
    assert TEST_PASSWORD not in text
    assert "Bearer" not in text


def test_a_valid_supplied_request_id_is_kept_and_echoed(testapp, log_dir):
    request_id = "req-" + uuid.uuid4().hex[:20]
    response = testapp.get("/healthz", headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] == request_id


@pytest.mark.parametrize("garbage", ["short", "has spaces in it", "x" * 65, "inject\\nnewline-abcdef", "ünïcödé-1234"])
def test_a_garbage_request_id_is_replaced_with_a_fresh_one(testapp, log_dir, garbage):
    response = testapp.get("/healthz", headers={"X-Request-ID": garbage})
    echoed = response.headers["X-Request-ID"]
    assert echoed != garbage
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    assert [r for r in records(log_dir, "network") if r.get("request_id") == echoed]


def test_every_response_gets_a_request_id_even_errors(testapp):
    ids = {testapp.get(path, status=status).headers["X-Request-ID"]
           for path, status in (("/healthz", 200), ("/nowhere", 404), ("/v1/auth/me", 401))}
    assert len(ids) == 3


def test_errors_go_to_the_exception_log_with_traceback_and_info_to_the_app_log(registry, log_dir):
    marker = uuid.uuid4().hex
    logger = logging.getLogger("kloyst.tests.logging")
    logger.info("all good %s", marker)
    try:
        raise ValueError(f"broken {marker}")
    except ValueError:
        logger.exception("it failed %s", marker)

    [info] = [r for r in records(log_dir, "app") if marker in r["message"]]
    assert info["level"] == "INFO" and info["logger"] == "kloyst.tests.logging"
    [error] = [r for r in records(log_dir, "exception") if marker in r["message"]]
    assert error["level"] == "ERROR"
    assert "Traceback" in error["exception"] and f"ValueError: broken {marker}" in error["exception"]
    assert not [r for r in records(log_dir, "app") if "it failed" in r["message"] and marker in r["message"]]


def test_log_level_from_the_environment_overrides_the_ini(kloyst_settings, tmp_path, restore_logging):
    settings = {**kloyst_settings, "kloyst.log.level": "INFO", "kloyst.log.dir": str(tmp_path)}
    config = make_configurator({"here": str(tmp_path)}, settings, environ={"LOG_LEVEL": "warning"})
    config.registry["kloyst.engine"].dispose()
    assert config.registry.settings["kloyst.log.level"] == "WARNING"
    logger = logging.getLogger("kloyst.tests.level")
    logger.info("quiet-info")
    logger.warning("loud-warning")
    messages = [r["message"] for r in records(tmp_path, "app")]
    assert "loud-warning" in messages
    assert "quiet-info" not in messages


def test_network_log_level_can_silence_the_request_log(kloyst_settings, tmp_path, restore_logging):
    settings = {**kloyst_settings, "kloyst.log.dir": str(tmp_path)}
    config = make_configurator({"here": str(tmp_path)}, settings, environ={"LOG_NETWORK_LEVEL": "WARNING"})
    config.registry["kloyst.engine"].dispose()
    logging.getLogger("kloyst.network").info("GET / 200")
    assert records(tmp_path, "network") == []


def _handler(tmp_path, retention_days: int) -> logs.DailyFileHandler:
    handler = logs.DailyFileHandler(str(tmp_path), "app", retention_days)
    handler.setFormatter(logs.JsonFormatter("app"))
    return handler


def test_retention_deletes_files_older_than_the_retention_and_keeps_the_rest(tmp_path):
    day = today()
    old = tmp_path / f"app-{(day - dt.timedelta(days=8)).isoformat()}.log"
    ancient = tmp_path / "app-2000-01-01.log"
    edge = tmp_path / f"app-{(day - dt.timedelta(days=7)).isoformat()}.log"
    other_kind = tmp_path / "network-2000-01-01.log"
    not_ours = tmp_path / "app-notes.log"
    for path in (old, ancient, edge, other_kind, not_ours):
        path.write_text("{}\n")

    handler = _handler(tmp_path, retention_days=7)
    try:
        handler.emit(logging.makeLogRecord({"msg": "hello", "levelno": logging.INFO, "levelname": "INFO"}))
    finally:
        handler.close()

    assert not old.exists() and not ancient.exists()
    assert edge.exists() and other_kind.exists() and not_ours.exists()
    [line] = (tmp_path / f"app-{day.isoformat()}.log").read_text().splitlines()
    assert json.loads(line)["message"] == "hello"


def test_daily_file_switches_to_a_new_file_at_utc_midnight(tmp_path, monkeypatch):
    handler = _handler(tmp_path, retention_days=30)
    days = iter([dt.date(2031, 1, 1), dt.date(2031, 1, 2)])
    monkeypatch.setattr(handler, "_today", lambda: next(days))
    try:
        for message in ("before midnight", "after midnight"):
            handler.emit(logging.makeLogRecord({"msg": message, "levelno": logging.INFO, "levelname": "INFO"}))
    finally:
        handler.close()
    assert "before midnight" in (tmp_path / "app-2031-01-01.log").read_text()
    assert "after midnight" in (tmp_path / "app-2031-01-02.log").read_text()


def test_the_callers_vendor_is_logged_with_a_tenant_request(testapp, accounts, log_dir):
    account = accounts.vendor()
    request_id = f"test-{uuid.uuid4().hex}"
    testapp.get("/v1/plugins", headers={**account.headers, "X-Request-ID": request_id})
    [entry] = [r for r in records(log_dir, "network") if r.get("request_id") == request_id]
    assert entry["vendor_id"] == str(account.vendor_id)


def test_the_client_is_the_peer_address_not_a_forwarded_for_header_it_wrote(testapp, log_dir):
    request_id = f"test-{uuid.uuid4().hex}"
    testapp.get("/healthz", headers={"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.99"},
                extra_environ={"REMOTE_ADDR": "192.0.2.7"})
    [entry] = [r for r in records(log_dir, "network") if r.get("request_id") == request_id]
    assert entry["client"] == "192.0.2.7"


@pytest.mark.parametrize("trusted_proxy, expected_client", [("127.0.0.1", "203.0.113.5"), ("", "127.0.0.1")])
def test_forwarded_for_is_believed_only_from_the_trusted_proxy(wsgi_app, log_dir, trusted_proxy, expected_client):
    server = start_http(wsgi_app, "127.0.0.1", 0, Stopper(), threads=1, trusted_proxy=trusted_proxy)
    stop = serve_in_background(server)
    request_id = f"test-{uuid.uuid4().hex}"
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{server.effective_port}/healthz",
                                         headers={"X-Forwarded-For": "203.0.113.5", "X-Request-ID": request_id})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    finally:
        stop()
    [entry] = [r for r in records(log_dir, "network") if r.get("request_id") == request_id]
    assert entry["client"] == expected_client
