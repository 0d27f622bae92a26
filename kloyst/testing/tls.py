"""Certificates made for the tests, and a TLS server on 127.0.0.1 serving one.

The nginx tests serve the shipped site with :func:`self_signed_certificate` (:mod:`kloyst.testing.nginx`);
the certificate probe (:mod:`kloyst.metrics.tls`) reads :class:`TlsServer`'s, whose end of validity the test
chooses."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_certificate(hosts: list[str], directory: Path,
                            expires: dt.datetime | None = None) -> tuple[Path, Path]:
    """An ECDSA P-256 certificate for ``hosts`` (certbot's default key type) and its key, as PEM files.

    It is its own CA (basicConstraints CA:TRUE, keyCertSign), so a client can trust exactly this
    certificate with ``ssl.create_default_context(cafile=...)`` and keep hostname checks on. It is valid
    from five minutes ago until ``expires`` (a day from now unless given).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, expires or now) - dt.timedelta(minutes=5))
        .not_valid_after(expires or now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host) for host in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsServer:
    """Completes TLS handshakes on 127.0.0.1 (a free port) with a certificate expiring at ``expires``."""

    def __init__(self, directory: Path, expires: dt.datetime, host: str = "localhost") -> None:
        cert, key = self_signed_certificate([host], directory, expires)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-server", daemon=True)

    @property
    def target(self) -> str:
        """``127.0.0.1:<port>``, as ``TLS_PROBE_TARGETS`` names it."""
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> TlsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            try:
                with self._context.wrap_socket(raw, server_side=True) as connection:
                    connection.settimeout(1)
                    connection.recv(1)  # the client closes after its handshake
            except OSError:
                pass
