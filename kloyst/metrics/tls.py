"""When the certificates people reach Kloyst through expire: a TLS probe, as a gauge an alert warns on.

nginx terminates TLS in front of Kloyst and exports nothing about its certificates, and a
certificate that certbot failed to renew is found by users first. So the processes that serve the
shared gauges (OUTBOX and ALL) connect to each ``kloyst.metrics.tls_probe_targets`` (``host`` or
``host:port``, the public names nginx serves), complete a TLS handshake with the name as SNI, and
export the certificate's end of validity:

* ``kloyst_tls_certificate_expiry_timestamp_seconds{target}`` — ``notAfter`` of the certificate
  served (KloystCertificateExpiring warns two weeks before);
* ``kloyst_tls_probe_success{target}`` — 1 when the handshake completed, 0 when it did not
  (KloystTlsProbeFailing: nothing listens, or the name is served no certificate).

The certificate is read, not judged: an expired or self-signed one still has a date to export.
A probe is made at most every five minutes (scrapes in between are answered from the last one);
the targets are probed together, so a probe waits :data:`TIMEOUT_SECONDS` at most.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

SETTING = "kloyst.metrics.tls_probe_targets"
TIMEOUT_SECONDS = 5.0
MIN_INTERVAL_SECONDS = 300.0


def parse_target(target: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[ipv6]:port`` as (host, port); the port is 443 unless given."""
    text = target.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{target!r} is not host, host:port or [ipv6]:port")
    return host, int(port or 443)


def as_probe_targets(value) -> list[str]:
    """The setting's comma-separated targets, each checked (a typo stops start-up instead of probing nothing)."""
    targets = [t.strip() for t in (value.split(",") if isinstance(value, str) else value or []) if t.strip()]
    for target in targets:
        parse_target(target)
    return targets


def certificate_expiry(target: str) -> float:
    """The end of validity (Unix time) of the certificate ``target`` serves; raises when no handshake completes."""
    host, port = parse_target(target)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # read the certificate, whatever it is: its date is what is asked
    with (socket.create_connection((host, port), timeout=TIMEOUT_SECONDS) as raw,
          context.wrap_socket(raw, server_hostname=host) as connection):
        der = connection.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError(f"{target} sent no certificate")
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


class TlsCertificates:
    """The probe of every configured target, cached :data:`MIN_INTERVAL_SECONDS`; nothing when none is configured."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._cached: list | None = None
        self._read_at = float("-inf")

    @staticmethod
    def _families() -> list:
        return [
            GaugeMetricFamily("kloyst_tls_certificate_expiry_timestamp_seconds", "When the certificate a probed "
                              "target serves stops being valid (Unix time; kloyst.metrics.tls_probe_targets).",
                              labels=["target"]),
            GaugeMetricFamily("kloyst_tls_probe_success", "1 when the last TLS handshake with the target completed, "
                              "0 when it did not.", labels=["target"]),
        ]

    def describe(self) -> list:
        return self._families()

    def collect(self) -> list:
        targets = self.registry.settings.get(SETTING) or []
        if not targets:
            return []
        with self._lock:
            if time.monotonic() - self._read_at >= MIN_INTERVAL_SECONDS:
                self._cached = self._probe(targets)
                self._read_at = time.monotonic()
            return list(self._cached or ())

    def _probe(self, targets: list[str]) -> list:
        """Every target at once: the scrape waits :data:`TIMEOUT_SECONDS` at most, however many do not answer."""
        expiry, success = self._families()
        with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="kloyst-tls-probe") as pool:
            probes = {target: pool.submit(certificate_expiry, target) for target in targets}
        for target, probe in probes.items():
            try:
                expiry.add_metric([target], probe.result())
                success.add_metric([target], 1.0)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                log.warning("metrics: the TLS probe of %s failed: %s: %s", target, type(exc).__name__, exc)
                success.add_metric([target], 0.0)
        return [expiry, success]
