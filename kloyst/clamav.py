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
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK_BYTES = 64 * 1024


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
