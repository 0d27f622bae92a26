"""A clamd client speaking INSTREAM directly, and failing closed.

Why not a library: the maintained ``clamav-client`` surfaces a raw ``BrokenPipeError`` when
clamd closes the socket on an over-long stream, and ``clamd`` sends with ``socket.send``
without checking the byte count, so a short write goes unnoticed. Speaking the protocol ourselves is
~50 lines, with our own timeouts and one rule: only ``stream: OK`` is clean.

* :meth:`Clamd.scan` returns a :class:`Verdict`: ``clean`` is True only for ``stream: OK``;
  ``stream: <name> FOUND`` is infected with that signature; any other answer clamd gives
  (``INSTREAM size limit exceeded. ERROR`` …) is not clean either, with the answer as reason.
* When no answer can be had at all (no address configured, connection refused, timeout,
  the socket closed without a reply), :class:`ScannerUnavailable` is raised: the caller
  must wait and retry, never treat the file as clean.

Every plugin that scans files (imports, media) has a scan mode: ``required`` (the default
everywhere) or ``off``, for a developer's own machine only. :func:`as_scan_mode` parses it
(any other word is refused, never guessed at) and :func:`unscanned_exposure` says why ``off``
would let a file from beyond this machine in unscanned; the plugins refuse to start then.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK_BYTES = 64 * 1024
SCAN_REQUIRED = "required"
SCAN_OFF = "off"


class ScannerUnavailable(Exception):
    """clamd could not be asked (not configured, down, or it hung up without answering)."""


@dataclass(frozen=True)
class Verdict:
    clean: bool
    signature: str | None = None  # the signature name when clamd FOUND something
    reply: str = ""  # clamd's raw answer

    @property
    def reason(self) -> str:
        return f"infected: {self.signature}" if self.signature else f"not clean: {self.reply or 'no answer'}"


def parse_reply(reply: str) -> Verdict:
    if reply == "stream: OK":
        return Verdict(True, reply=reply)
    if reply.startswith("stream: ") and reply.endswith(" FOUND"):
        return Verdict(False, signature=reply[len("stream: "):-len(" FOUND")], reply=reply)
    return Verdict(False, reply=reply)


class Clamd:
    """``tcp://host:port`` or ``unix:///path/to/clamd.sock``.

    Two timeouts: ``connect_timeout`` is short because a scanner that does not accept a
    connection is down, and an upload waiting for it must not hold a worker thread for long;
    ``timeout`` bounds each read and write once connected, where a large file takes a while.
    """

    def __init__(self, address: str, *, timeout: float = 60.0, connect_timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)

    def _connect(self) -> socket.socket:
        if not self.address:
            raise ScannerUnavailable("no clamd address is configured (imports.clamd_address / CLAMD_ADDRESS)")
        parts = urlsplit(self.address)
        try:
            if parts.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout)
                sock.connect(parts.path)
            elif parts.scheme == "tcp" and parts.hostname and parts.port:
                sock = socket.create_connection((parts.hostname, parts.port), timeout=self.connect_timeout)
            else:
                raise ScannerUnavailable(f"clamd address {self.address!r} is not tcp://host:port or unix:///path")
        except OSError as exc:
            raise ScannerUnavailable(f"clamd at {self.address} is unreachable: {exc}") from exc
        sock.settimeout(self.timeout)
        return sock

    def _send(self, sock: socket.socket, data: bytes) -> bool:
        """Send ``data``; False when clamd has hung up (it stops reading past its size limit, then answers)."""
        try:
            sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False
        except OSError as exc:
            raise ScannerUnavailable(f"clamd at {self.address} failed while receiving: {exc}") from exc

    def _ask(self, command: bytes, chunks: Iterable[bytes] = ()) -> str:
        with self._connect() as sock:
            # Errors reading ``chunks`` (the file) propagate as they are: they say nothing about clamd.
            open_ = self._send(sock, command)
            for chunk in chunks if open_ else ():
                for start in range(0, len(chunk), CHUNK_BYTES):
                    piece = chunk[start:start + CHUNK_BYTES]
                    if not (open_ := self._send(sock, struct.pack("!L", len(piece)) + piece)):
                        break
                if not open_:
                    break
            if open_ and command == b"zINSTREAM\0":
                self._send(sock, b"\0\0\0\0")
            reply = bytearray()
            try:
                while not reply.endswith(b"\0"):
                    data = sock.recv(4096)
                    if not data:
                        break
                    reply += data
            except OSError as exc:
                if not reply.endswith(b"\0"):
                    raise ScannerUnavailable(f"clamd at {self.address} did not answer: {exc}") from exc
        if not reply.endswith(b"\0"):  # z-commands' answers end with NUL; anything short of that is no answer
            raise ScannerUnavailable(f"clamd at {self.address} closed the connection without a complete answer")
        return reply.rstrip(b"\0").decode("utf-8", "replace").strip()

    def ping(self) -> bool:
        try:
            return self._ask(b"zPING\0") == "PONG"
        except ScannerUnavailable:
            return False

    def scan(self, chunks: Iterable[bytes]) -> Verdict:
        """Stream ``chunks`` to clamd (INSTREAM) and return its verdict."""
        return parse_reply(self._ask(b"zINSTREAM\0", chunks))

    def scan_file(self, path, *, block: int = 1024 * 1024) -> Verdict:
        def blocks():
            with open(path, "rb") as handle:
                while data := handle.read(block):
                    yield data

        return self.scan(blocks())


def as_scan_mode(value) -> str:
    """``required`` or ``off``; anything else (``of``, ``false``, an empty value) is refused, never read as either."""
    text = str(value).strip().lower() if value is not None else ""
    if text not in (SCAN_REQUIRED, SCAN_OFF):
        raise ValueError(f"{text or '(empty)'!r} is not a scan mode: use required (every upload is scanned by "
                         "clamd) or off (development on this machine only: nothing is scanned)")
    return text


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) can only be reached from this machine."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # any other name may resolve to anything
        return False


def unscanned_exposure(settings) -> list[str]:
    """Why an unscanned upload could come from beyond this machine: the API's address, public URL or proxy.

    Empty when only this machine can reach the API, the one place a scan mode of ``off`` is acceptable.
    """
    problems = []
    host = str(settings["kloyst.http.host"] or "")
    if not is_loopback(host):
        problems.append(f"the API listens on {host or '(all addresses)'} (kloyst.http.host / HOST), not on "
                        "127.0.0.1, ::1 or localhost")
    public_url = str(settings.get("kloyst.http.public_url") or "")
    public_host = urlsplit(public_url).hostname
    if public_host and not is_loopback(public_host):
        problems.append(f"users reach it at {public_url} (kloyst.http.public_url / PUBLIC_URL)")
    proxy = str(settings.get("kloyst.http.trusted_proxy") or "")
    if proxy and not is_loopback(proxy):
        problems.append(f"it trusts the proxy {proxy} (kloyst.http.trusted_proxy / TRUSTED_PROXY), which is not "
                        "on this machine")
    return problems
