"""``imports.scan``: scanning is required unless a developer's own machine explicitly says ``off``, and then it shows.

The policy (:mod:`kloyst_plugins.imports.scanning`) on its own, the ini files as shipped, and the
unscanned path through the API and the operator command on PostgreSQL. Start-up refusals of
real processes and the embedded default end to end are in test_imports_embedded.py.
"""

from __future__ import annotations

import configparser
import datetime as dt
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from imports_processing_support import csv_bytes, reload
from kloyst.config import CORE_SETTINGS, ConfigurationError, resolve
from kloyst.db import utcnow
from kloyst_plugins.imports import cli, scanning, tasks
from kloyst_plugins.imports import plugin as imports_plugin
from kloyst_plugins.imports.models import ContactImportJob

REPO = Path(__file__).resolve().parents[3]
URL = "/v1/imports"
CSV = b"name,phone\nAda,+441632960001\nGrace,+441632960002\n"


def local_settings(**changes) -> dict:
    """What the embedded default resolves to, scanning off, with ``changes``."""
    return {"imports.scan": "off", "imports.clamd_address": "", "kloyst.http.host": "127.0.0.1",
            "kloyst.http.public_url": "http://127.0.0.1:6543", "kloyst.http.trusted_proxy": "", **changes}


def ini_settings(name: str, environ: dict[str, str]) -> dict:
    """``[app:main]`` of the repository's ini file ``name`` resolved as Kloyst resolves it (core and imports)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / name)
    table = CORE_SETTINGS + tuple(imports_plugin.kloyst_settings())
    return resolve(dict(parser["app:main"]), table, environ)


@pytest.mark.parametrize("word", ["required", "off", " OFF ", "Required"])
def test_the_scan_mode_is_required_or_off(word):
    assert scanning.as_scan_mode(word) == word.strip().lower()


@pytest.mark.parametrize("word", ["of", "false", "no", "optional", "", None])
def test_any_other_scan_mode_is_refused_rather_than_guessed(word):
    with pytest.raises(ValueError, match="use required .* or off"):
        scanning.as_scan_mode(word)


def test_scanning_is_required_unless_the_ini_says_off():
    setting = next(s for s in imports_plugin.kloyst_settings() if s.key == "imports.scan")
    assert (setting.env, setting.default) == ("IMPORTS_SCAN", "required")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_scanning_off_is_accepted_on_a_loopback_address(host):
    scanning.check_settings(local_settings(**{"kloyst.http.host": host}))


@pytest.mark.parametrize(("changes", "named"), [
    ({"kloyst.http.host": "0.0.0.0"}, "HOST"),
    ({"kloyst.http.host": "::"}, "HOST"),
    ({"kloyst.http.host": "192.168.1.20"}, "HOST"),
    ({"kloyst.http.host": "kloyst.example.com"}, "HOST"),
    ({"kloyst.http.public_url": "https://api.example.com"}, "PUBLIC_URL"),
    ({"kloyst.http.trusted_proxy": "*"}, "TRUSTED_PROXY"),
    ({"kloyst.http.trusted_proxy": "10.0.0.5"}, "TRUSTED_PROXY"),
    ({"imports.clamd_address": "tcp://127.0.0.1:3310"}, "CLAMD_ADDRESS"),
], ids=["all-v4", "all-v6", "lan", "name", "public-url", "any-proxy", "remote-proxy", "scanner-configured"])
def test_scanning_off_is_refused_where_an_upload_could_come_from_beyond_this_machine(changes, named):
    with pytest.raises(ConfigurationError, match="imports.scan = off") as refused:
        scanning.check_settings(local_settings(**changes))
    assert named in str(refused.value) and "IMPORTS_SCAN=required" in str(refused.value)


def test_a_proxy_on_this_machine_does_not_refuse_scanning_off():
    scanning.check_settings(local_settings(**{"kloyst.http.trusted_proxy": "127.0.0.1"}))


def test_scanning_required_starts_anywhere():
    scanning.check_settings(local_settings(**{"imports.scan": "required", "kloyst.http.host": "0.0.0.0",
                                              "imports.clamd_address": "tcp://clamd:3310"}))


def test_development_ini_turns_scanning_off_on_loopback():
    settings = ini_settings("development.ini", {})
    assert settings["imports.scan"] == "off"
    scanning.check_settings(settings)  # accepted as shipped


def test_development_ini_with_its_api_opened_to_the_network_is_refused():
    with pytest.raises(ConfigurationError, match="0.0.0.0"):
        scanning.check_settings(ini_settings("development.ini", {"HOST": "0.0.0.0"}))


def test_staging_ini_requires_scanning_and_refuses_it_off():
    # Every variable staging.ini takes from the environment, with values that parse.
    environ = dict.fromkeys(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", (REPO / "staging.ini").read_text()), "x" * 32)
    key = "k1:" + "A" * 43
    environ.update(SERVICE_TYPE="ALL", JWT_SIGNING_KEYS=key, DATA_ENCRYPTION_KEYS=key)
    assert ini_settings("staging.ini", environ)["imports.scan"] == "required"
    with pytest.raises(ConfigurationError, match="imports.scan = off"):
        scanning.check_settings(ini_settings("staging.ini", {**environ, "IMPORTS_SCAN": "off",
                                                             "CLAMD_ADDRESS": "tcp://clamd:3310"}))


def test_waiting_uploads_ask_clamd_again_within_a_few_seconds_however_long_it_has_been_down():
    delays = [tasks.retry_delay(attempt) for attempt in range(1, 2000)]
    assert min(delays) > 0 and max(delays) <= tasks.SCAN_RETRY_CAP_SECONDS <= 5


@pytest.fixture
def unscanned(owner, enable_plugin, registry, monkeypatch, tmp_path):
    """A vendor with imports on, on a deployment with scanning off and no scanner configured."""
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    monkeypatch.setitem(registry.settings, "imports.scan", "off")
    monkeypatch.setitem(registry.settings, "imports.clamd_address", "")
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")
    return owner


@pytest.fixture
def clamd_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(tasks, "scan_stored_file", lambda *args, **kwargs: calls.append(args))  # the CLI's too
    return calls


def test_with_scanning_off_the_upload_answer_says_not_scanned(testapp, unscanned, clamd_calls):
    created = testapp.post(URL, upload_files=[("file", "contacts.csv", CSV)], headers=unscanned.headers,
                           status=201).json["import"]
    assert created["scan"]["result"] == scanning.NOT_SCANNED == "not scanned: imports.scan = off (development only)"


def test_with_scanning_off_the_file_is_extracted_without_asking_clamd_and_the_job_says_so(testapp, unscanned,
                                                                                          clamd_calls):
    created = testapp.post(URL, upload_files=[("file", "contacts.csv", CSV)], headers=unscanned.headers,
                           status=201).json["import"]
    job = testapp.get(f"{URL}/{created['id']}", headers=unscanned.headers).json["import"]
    assert job["status"] == "AWAITING_MAPPING" and job["headers"] == ["name", "phone"]
    assert job["scan"] == {"result": scanning.NOT_SCANNED, "attempts": 0}
    assert clamd_calls == []


def test_a_waiting_upload_is_not_scanned_once_scanning_is_turned_off(testapp, unscanned, registry, monkeypatch,
                                                                     run_outbox, db):
    monkeypatch.setitem(registry.settings, "imports.scan", "required")
    created = testapp.post(URL, upload_files=[("file", "contacts.csv", CSV)], headers=unscanned.headers,
                           status=201).json["import"]
    assert created["scan"]["result"] is None
    waiting = testapp.get(f"{URL}/{created['id']}", headers=unscanned.headers).json["import"]
    assert waiting["status"] == "UPLOADED" and waiting["scan"]["result"].startswith(tasks.WAITING)

    monkeypatch.setitem(registry.settings, "imports.scan", "off")  # the developer restarted with development.ini
    db.execute(sa.text("UPDATE outbox_event SET available_at = now() WHERE status = 'pending'"))
    db.commit()
    run_outbox()
    job = testapp.get(f"{URL}/{created['id']}", headers=unscanned.headers).json["import"]
    assert job["status"] == "AWAITING_MAPPING" and job["scan"]["result"] == scanning.NOT_SCANNED


def test_the_operator_command_imports_unscanned_with_scanning_off_and_records_it(db, registry, unscanned, tmp_path,
                                                                                clamd_calls):
    source = tmp_path / "contacts.csv"
    source.write_bytes(csv_bytes(["Mobile"], [["+14155550123"]])[0])
    job = reload(db, ContactImportJob(id=cli.create_job(registry, unscanned.vendor_id, source)))
    assert (job.status, job.scan_result) == ("AWAITING_MAPPING", scanning.NOT_SCANNED)
    trusted = reload(db, ContactImportJob(id=cli.create_job(registry, unscanned.vendor_id, source, scan=False)))
    assert trusted.scan_result == cli.NOT_SCANNED_BY_OPERATOR
    assert clamd_calls == []


def test_the_retry_of_a_waiting_upload_is_due_within_seconds(testapp, unscanned, registry, monkeypatch, db):
    monkeypatch.setitem(registry.settings, "imports.scan", "required")
    before = utcnow()
    testapp.post(URL, upload_files=[("file", "contacts.csv", CSV)], headers=unscanned.headers, status=201)
    due = db.scalar(sa.text("SELECT max(available_at) FROM outbox_event WHERE status = 'pending'"))
    assert before < due <= before + dt.timedelta(seconds=tasks.SCAN_RETRY_CAP_SECONDS + 1)
