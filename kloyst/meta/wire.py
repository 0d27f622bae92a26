"""The send path's HTTP/1.1: one keep-alive socket per thread, bytes in, bytes out.

Why not urllib3 here too: measured with ``py-spy`` in the send benchmark, three quarters of a
sender's CPU went to urllib3 and ``http.client`` — mostly parsing response headers with the
``email`` package, for answers that are a status line, a handful of headers and 100 bytes of
JSON. At 1,000+ messages/s on two cores that is the bottleneck. This module does only what a
Graph POST needs: write one request, read the status line, the headers it uses
(``Content-Length``, ``Transfer-Encoding``, ``Connection``, the usage headers, ``x-fb-trace-id``)
and the body. Everything else (paging, templates, phone numbers) stays on urllib3.

Same guarantees as :class:`kloyst.meta.client.MetaClient`: no retries, no redirects, TLS
verified with the system's CAs, timeouts on connect and read, and every failure a
:class:`MetaError` — ``maybe_accepted=False`` when the request cannot have left (no
connection), ``True`` once bytes were written (Meta may have accepted a send whose answer we
never read). A stale keep-alive connection (closed by the server between requests) is
reopened once before anything is written, so it is never mistaken for a maybe-accepted send.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
WANTED = (b"content-length", b"transfer-encoding", b"connection", b"x-app-usage", b"x-business-use-case-usage",
          b"x-fb-trace-id")


class WireError(Exception):
    """A transport failure; ``sent`` says whether any request bytes were written."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def is_stale(self) -> bool:
        """True when the server closed the idle connection (readable with nothing, or EOF, to read)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class GraphWire:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme in {base_url!r}")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        self.host_header = self.host if parts.port is None else f"{self.host}:{self.port}"
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()

    def warm_up(self) -> None:
        """Open this thread's connection now, so the first send does not pay for (and bunch behind) it."""
        self._connection()

    def post_json(self, path: str, body: bytes, token: str) -> tuple[int, dict[bytes, bytes], bytes]:
        """POST ``body`` (JSON bytes) to ``<base>/<path>``; return ``(status, wanted headers, body)``."""
        request = (f"POST {self.prefix}/{path.lstrip('/')} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                   f"Authorization: Bearer {token}\r\nAccept: application/json\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        connection = self._connection()
        try:
            connection.sock.sendall(request)
        except OSError as exc:
            self._drop(connection)
            raise WireError(f"{type(exc).__name__}: {exc}", sent=True) from None
        try:
            status, headers, payload, keep = self._read_response(connection)
        except (OSError, ValueError) as exc:
            self._drop(connection)
            raise WireError(f"{type(exc).__name__}: {exc}", sent=True) from None
        if not keep:
            self._drop(connection)
        return status, headers, payload

    # ---- connections ------------------------------------------------------------------------------------

    def _connection(self) -> _Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and connection.is_stale():
            self._drop(connection)
            connection = None
        if connection is None:
            connection = self._open()
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def _open(self) -> _Connection:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:
            raise WireError(f"cannot connect to {self.host}:{self.port}: {type(exc).__name__}: {exc}",
                            sent=False) from None
        return _Connection(sock)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            if connection in self._all:
                self._all.remove(connection)

    # ---- responses --------------------------------------------------------------------------------------

    def _read_response(self, connection: _Connection) -> tuple[int, dict[bytes, bytes], bytes, bool]:
        head = self._read_until(connection, b"\r\n\r\n", MAX_HEADER_BYTES)
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {lines[0][:60]!r}")
        status = int(rest[:3])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name in WANTED:
                headers[name] = value.strip()
        keep = headers.get(b"connection", b"").lower() != b"close" and version != b"HTTP/1.0"
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = self._read_chunked(connection)
        elif b"content-length" in headers:
            size = int(headers[b"content-length"])
            if size > MAX_BODY_BYTES:
                raise ValueError(f"answer of {size} bytes is larger than expected")
            body = self._read_exactly(connection, size)
        else:  # no length: the body runs to the end of the connection
            body = self._read_to_close(connection)
            keep = False
        return status, headers, body, keep

    def _recv(self, connection: _Connection) -> bytes:
        data = connection.sock.recv(65536)
        if not data:
            raise ConnectionResetError("connection closed mid-answer")
        return data

    def _read_until(self, connection: _Connection, marker: bytes, limit: int) -> bytes:
        while (index := connection.buffer.find(marker)) < 0:
            if len(connection.buffer) > limit:
                raise ValueError("answer headers too large")
            connection.buffer += self._recv(connection)
        head, connection.buffer = connection.buffer[:index], connection.buffer[index + len(marker):]
        return head

    def _read_exactly(self, connection: _Connection, size: int) -> bytes:
        while len(connection.buffer) < size:
            connection.buffer += self._recv(connection)
        body, connection.buffer = connection.buffer[:size], connection.buffer[size:]
        return body

    def _read_chunked(self, connection: _Connection) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self._read_until(connection, b"\r\n", 1024).split(b";")[0], 16)
            if size == 0:
                self._read_until(connection, b"\r\n", MAX_HEADER_BYTES)  # trailers end with an empty line
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise ValueError("chunked answer larger than expected")
            parts.append(self._read_exactly(connection, size))
            self._read_exactly(connection, 2)

    def _read_to_close(self, connection: _Connection) -> bytes:
        chunks = [connection.buffer]
        connection.buffer = b""
        while True:
            data = connection.sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
            if sum(map(len, chunks)) > MAX_BODY_BYTES:
                raise ValueError("answer larger than expected")
