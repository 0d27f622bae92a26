"""The send path's lean HTTP/1.1 (kloyst.meta.wire) against a raw socket server that answers exactly as told."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from kloyst.meta.wire import GraphWire, WireError


class RawServer:
    """Accepts connections; for each request read, sends the next scripted answer (bytes) or closes (None)."""

    def __init__(self, answers: list[bytes | None], hang_up_after_answer: bool = False) -> None:
        self.answers = list(answers)
        self.hang_up_after_answer = hang_up_after_answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v23.0"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while self.answers:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")][0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                answer = self.answers.pop(0)
                if answer is None:
                    return
                conn.sendall(answer)
                if b"Connection: close" in answer or self.hang_up_after_answer:
                    return

    def close(self) -> None:
        self.sock.close()


def ok(body: bytes = b'{"messages":[{"id":"wamid.1"}]}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + \
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


@pytest.fixture
def server_with():
    servers = []

    def make(*answers, **options):
        server = RawServer(list(answers), **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def test_a_post_carries_the_token_and_body_and_reads_the_answer(server_with):
    server = server_with(ok(extra=b"X-FB-Trace-Id: abc\r\nX-App-Usage: {\"call_count\": 5}\r\n"))
    wire = GraphWire(server.url)
    status, headers, body = wire.post_json("123/messages", b'{"a":1}', "secret-token")
    assert status == 200 and body == b'{"messages":[{"id":"wamid.1"}]}'
    assert headers[b"x-fb-trace-id"] == b"abc" and headers[b"x-app-usage"] == b'{"call_count": 5}'
    request = server.requests[0]
    assert request.startswith(b"POST /v23.0/123/messages HTTP/1.1\r\n")
    assert b"Authorization: Bearer secret-token\r\n" in request and request.endswith(b'{"a":1}')
    wire.close()


def test_sequential_posts_reuse_one_connection(server_with):
    server = server_with(ok(), ok(), ok())
    wire = GraphWire(server.url)
    for _ in range(3):
        assert wire.post_json("1/messages", b"{}", "t")[0] == 200
    assert server.connections == 1
    wire.close()


def test_a_chunked_answer_is_reassembled(server_with):
    chunked = (b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"err\r\n8;ext=1\r\nor\":{}}\n\r\n0\r\n\r\n")
    server = server_with(chunked, ok())
    wire = GraphWire(server.url)
    assert wire.post_json("1/messages", b"{}", "t")[:3:2] == (400, b'{"error":{}}\n')
    assert wire.post_json("1/messages", b"{}", "t")[0] == 200  # the connection is still in step
    wire.close()


def test_connection_close_makes_the_next_post_open_a_new_connection(server_with):
    server = server_with(ok(extra=b"Connection: close\r\n"), ok())
    wire = GraphWire(server.url)
    assert wire.post_json("1/messages", b"{}", "t")[0] == 200
    assert wire.post_json("1/messages", b"{}", "t")[0] == 200
    assert server.connections == 2
    wire.close()


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(server_with):
    # A keep-alive timeout: the server hangs up after answering, without saying "Connection: close".
    server = server_with(ok(), ok(), hang_up_after_answer=True)
    wire = GraphWire(server.url)
    assert wire.post_json("1/messages", b"{}", "t")[0] == 200
    time.sleep(0.1)  # the server's FIN arrives
    # Noticed before writing: a new connection, and nothing that could be mistaken for a maybe-sent call.
    assert wire.post_json("1/messages", b"{}", "t")[0] == 200
    assert server.connections == 2 and len(server.requests) == 2
    wire.close()


def test_nothing_listening_is_an_error_before_anything_was_sent():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(WireError) as caught:
        GraphWire(f"http://127.0.0.1:{port}/v23.0", timeout=2).post_json("1/messages", b"{}", "t")
    assert caught.value.sent is False


def test_a_hang_up_after_the_request_left_may_have_been_accepted(server_with):
    server = server_with(None)
    with pytest.raises(WireError) as caught:
        GraphWire(server.url, timeout=2).post_json("1/messages", b"{}", "t")
    assert caught.value.sent is True and len(server.requests) == 1


def test_garbage_instead_of_http_is_an_error(server_with):
    server = server_with(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(WireError):
        GraphWire(server.url, timeout=2).post_json("1/messages", b"{}", "t")
