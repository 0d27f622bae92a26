"""The sandbox's HTTP layer: a threading HTTP/1.1 server with keep-alive, one thread per connection.

Latency is a ``sleep`` in the connection's own thread, so 100 ms per request costs no CPU
and a hundred clients in flight get a hundred concurrent waits: that is how the sandbox
sustains Meta's 1,000 mps with Meta's latency on two cores.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from kloyst.sandbox import graph
from kloyst.sandbox.errors import error_response
from kloyst.sandbox.state import PhoneNumber, SandboxState, Template
from kloyst.sandbox.webhooks import WebhookSender

log = logging.getLogger(__name__)

GRAPH_PATH = re.compile(r"^/(v\d+\.\d+)/([0-9A-Za-z_]+)/(messages|message_templates|phone_numbers)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: hundreds of clients connect at once
    sandbox: SandboxServer

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-request (a Kloyst process killed with calls in flight) is no error of
        Meta's: say nothing. Anything else is printed, as the standard library does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Headers(dict):
    """Header names stored lower-case; ``get`` by any case."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small answers must not wait for the client's delayed ACK
    server: _Server
    # Set by BaseHTTPRequestHandler, and not declared by its stubs.
    raw_requestline: bytes
    _headers_buffer: list[bytes]

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def parse_request(self) -> bool:
        """The request line and headers, parsed plainly.

        The stdlib hands headers to the ``email`` package, which costs more CPU than everything
        else the sandbox does for a send. The sandbox shares the machine with the Kloyst it
        measures, so its own cost would show up as Kloyst's. HTTP/1.x only; what it needs of
        the headers is a case-insensitive ``get``.
        """
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.request_version = "HTTP/1.1"
            self.send_error(400, f"Bad request line {line[:80]!r}")
            return False
        self.command, self.path, self.request_version = parts
        headers = _Headers()
        while True:
            raw = self.rfile.readline(65537)
            if len(raw) > 65536 or len(headers) > 100:
                self.send_error(431, "Request header fields too large")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("iso-8859-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        self.headers = headers  # type: ignore[assignment]  # a plain mapping: the handler only calls .get()
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (self.request_version == "HTTP/1.0"
                                                          and connection != "keep-alive")
        return True

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        arrived = time.monotonic()
        sandbox = self.server.sandbox
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        query = dict(parse_qsl(url.query))
        try:
            if url.path.startswith("/_sandbox/"):
                status, result = sandbox.control(method, url.path.removeprefix("/_sandbox/"), body, query)
            else:
                # Meta counts a request against the number's throughput when it arrives, then takes its time
                # to answer: admit first, wait after. (Waiting first would measure this server's thread
                # scheduling under load, not the sender's pacing.)
                status, result = sandbox.graph(method, url.path, query, body, self.headers.get("Authorization", ""),
                                               arrived)
                latency = sandbox.state.behaviour.latency_ms
                if latency > 0:
                    time.sleep(latency / 1000.0)
        except Exception:  # a request the checks did not foresee: answer like Meta's unknown error, keep serving
            log.exception("sandbox failed on %s %s", method, url.path)
            status, result = error_response(1, "The sandbox could not handle this request.")
        payload = json.dumps(result, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self._headers_buffer.append(b"\r\n" + payload)  # one write for head and body
        self.flush_headers()


class SandboxServer:
    """The sandbox bound to ``host:port`` (port 0 picks a free one); ``start()`` serves in a thread."""

    def __init__(self, state: SandboxState | None = None, host: str = "127.0.0.1", port: int = 0,
                 webhook_threads: int = 4):
        self.state = state or SandboxState()
        self.webhooks = WebhookSender(self.state, threads=webhook_threads)
        self.httpd = _Server((host, port), _Handler)
        self.httpd.sandbox = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sandbox-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
        self.httpd.server_close()
        self.webhooks.close()

    def graph(self, method: str, path: str, query: dict, body, authorization: str,
              arrived: float | None = None) -> tuple[int, dict]:
        match = GRAPH_PATH.match(path)
        if match is None:
            return error_response(100, f"Unknown path components: {path}", subcode=2500)
        token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        expected = self.state.behaviour.access_token
        if not token or (expected is not None and token != expected):
            return error_response(190, "Invalid OAuth access token - Cannot parse access token")
        if body is ValueError:
            return error_response(100, "The request body is not valid JSON.")
        _, object_id, edge = match.groups()
        base_url = self.url + path
        if edge == "messages" and method == "POST":
            return graph.send_message(self.state, object_id, body, on_accepted=self.webhooks.message_accepted,
                                      arrived=arrived)
        if edge == "message_templates" and method == "GET":
            return graph.list_templates(self.state, object_id, query, base_url)
        if edge == "message_templates" and method == "POST":
            return graph.create_template(self.state, object_id, body)
        if edge == "phone_numbers" and method == "GET":
            return graph.list_phone_numbers(self.state, object_id, query, base_url)
        return error_response(100, f"Unsupported {method.lower()} request on {edge}.", subcode=33)

    def control(self, method: str, action: str, body, query: dict) -> tuple[int, dict]:
        """The ``/_sandbox/`` API: configure the sandbox and read what it received (tests, benchmarks)."""
        state = self.state
        data = body if isinstance(body, dict) else {}
        try:
            if method == "GET" and action == "errors":  # cheap enough to poll during a load run
                with state.lock:
                    return 200, {"accepted": len(state.sends), "errors": {str(c): n for c, n in state.errors.items()},
                                 "throughput_exceeded": state.errors.get(130429, 0)}
            if method == "GET" and action == "stats":
                return 200, {**state.stats(), "webhooks": self.webhooks.stats()}
            if method == "GET" and action == "sends":
                with state.lock:
                    return 200, {"sends": list(state.sends)}
            if method == "GET" and action == "accepted":  # ?phone_number_id=ID&duplicates=true
                duplicates = query.get("duplicates", "false")
                if duplicates not in ("true", "false"):
                    raise ValueError(f"duplicates must be true or false, not {duplicates!r}")
                return 200, state.accepted(query.get("phone_number_id"), duplicates_only=duplicates == "true")
            if method == "GET" and action == "config":
                return 200, _behaviour_json(state.behaviour)
            if method != "POST":
                return 404, {"error": f"no such sandbox action: {method} {action}"}
            if action == "config":
                with state.lock:
                    state.behaviour.update(data)
                return 200, _behaviour_json(state.behaviour)
            if action == "numbers":
                state.add_number(PhoneNumber(id=str(data["id"]), waba_id=str(data["waba_id"]),
                                             display_phone_number=str(data.get("display_phone_number", data["id"])),
                                             throughput=int(data.get("throughput", 80)),
                                             verified_name=data.get("verified_name", "Kloyst Sandbox"),
                                             quality_rating=data.get("quality_rating", "GREEN")))
                return 200, {"id": str(data["id"])}
            if action == "templates":
                template = Template(id=str(data.get("id") or state.new_id()), name=data["name"],
                                    language=data["language"], category=data.get("category", "UTILITY"),
                                    components=data.get("components", []), status=data.get("status", "APPROVED"),
                                    parameter_format=data.get("parameter_format", "POSITIONAL"))
                state.add_template(str(data["waba_id"]), template)
                return 200, template.as_json()
            if action == "undeliverable":
                with state.lock:
                    state.undeliverable.update(str(r).lstrip("+") for r in data["recipients"])
                return 200, {"undeliverable": sorted(state.undeliverable)}
            if action == "inbound":
                number = state.numbers[str(data["phone_number_id"])]
                wamid = graph.new_wamid()
                self.webhooks.inbound_text(number, str(data["from"]).lstrip("+"), str(data["text"]),
                                           str(data.get("name", "Sandbox User")), wamid)
                return 200, {"id": wamid}
            if action == "reset":
                with state.lock:
                    state.reset_records()
                return 200, {"reset": True}
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": f"bad sandbox request: {exc!r}"}
        return 404, {"error": f"no such sandbox action: {method} {action}"}


def _behaviour_json(behaviour) -> dict:
    data = dict(vars(behaviour))
    for key in ("failure_rates", "status_failure_rates"):
        data[key] = {str(code): rate for code, rate in data[key].items()}
    return data
