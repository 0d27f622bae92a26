"""A TLS server on 127.0.0.1 with a certificate made for the test: what the certificate probe (kloyst.metrics.tls)
reads in the tests, with a known end of validity."""

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


def write_certificate(directory: Path, host: str, expires: dt.datetime) -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` valid until ``expires``, and its key, as PEM files in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(expires - dt.timedelta(days=90))
                   .not_valid_after(expires).sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert, private = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, private


class TlsServer:
    """Completes TLS handshakes on 127.0.0.1 (a free port) with a certificate expiring at ``expires``."""

    def __init__(self, directory: Path, expires: dt.datetime, host: str = "localhost") -> None:
        cert, key = write_certificate(directory, host, expires)
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
