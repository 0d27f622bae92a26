"""The TLS probe (kloyst/metrics/tls.py): the expiry of the certificate a target serves, and whether the handshake
completed, for KloystCertificateExpiring and KloystTlsProbeFailing. A real TLS server on 127.0.0.1 serves a
certificate made for the test."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from kloyst.config import ConfigurationError, resolve
from kloyst.core_plugin import kloyst_settings
from kloyst.metrics import tls
from kloyst.testing.processes import free_port
from kloyst.testing.tls import TlsServer

EXPIRES = dt.datetime(2027, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


@pytest.fixture
def tls_server(tmp_path):
    server = TlsServer(tmp_path, EXPIRES).start()
    yield server.target
    server.stop()


class _Registry:
    def __init__(self, targets: list[str]) -> None:
        self.settings = {tls.SETTING: targets}


def _samples(collector) -> dict:
    return {(s.name, s.labels["target"]): s.value for family in collector.collect() for s in family.samples}


def test_the_probe_exports_when_the_served_certificate_expires(tls_server):
    assert tls.certificate_expiry(tls_server) == EXPIRES.timestamp()
    samples = _samples(tls.TlsCertificates(_Registry([tls_server])))
    assert samples == {("kloyst_tls_certificate_expiry_timestamp_seconds", tls_server): EXPIRES.timestamp(),
                       ("kloyst_tls_probe_success", tls_server): 1.0}


def test_a_target_that_completes_no_handshake_is_exported_as_failed(tls_server):
    closed = f"127.0.0.1:{free_port()}"
    samples = _samples(tls.TlsCertificates(_Registry([closed, tls_server])))
    assert samples[("kloyst_tls_probe_success", closed)] == 0.0
    assert ("kloyst_tls_certificate_expiry_timestamp_seconds", closed) not in samples
    assert samples[("kloyst_tls_probe_success", tls_server)] == 1.0


def test_no_target_exports_nothing():
    assert tls.TlsCertificates(_Registry([])).collect() == []


@pytest.mark.parametrize(("target", "parsed"), [("kloyst.example.com", ("kloyst.example.com", 443)),
                                                ("hooks.example.com:8443", ("hooks.example.com", 8443)),
                                                ("[2001:db8::1]:443", ("2001:db8::1", 443))])
def test_targets_are_a_host_and_a_port_that_defaults_to_443(target, parsed):
    assert tls.parse_target(target) == parsed


def test_a_malformed_target_stops_start_up_naming_the_setting():
    settings = [s for s in kloyst_settings() if s.key == tls.SETTING]
    with pytest.raises(ConfigurationError, match="TLS_PROBE_TARGETS"):
        resolve({}, tuple(settings), {"TLS_PROBE_TARGETS": "ok.example.com, bad.example.com:https"})


def test_targets_that_do_not_answer_are_waited_for_together_not_one_after_another(monkeypatch):
    """A scrape must not wait the probe's timeout once per dead target (Prometheus gives up after 10 s)."""
    def slow(target: str) -> float:
        time.sleep(0.5)
        raise TimeoutError(target)

    monkeypatch.setattr(tls, "certificate_expiry", slow)
    started = time.monotonic()
    samples = _samples(tls.TlsCertificates(_Registry([f"dead-{n}.example.com" for n in range(6)])))
    assert time.monotonic() - started < 2.0
    assert sorted(samples.values()) == [0.0] * 6
