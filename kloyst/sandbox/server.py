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
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from kloyst.sandbox import graph, inbound
from kloyst.sandbox.errors import error_response
from kloyst.sandbox.media import MAX_UPLOAD_BYTES, URL_PATH
from kloyst.sandbox.state import PhoneNumber, SandboxState, Template
from kloyst.sandbox.webhooks import WebhookSender

log = logging.getLogger(__name__)

# /{version}/{object id}[/{edge}]; group 3 is None for the object itself (a number, a WABA, a media id).
GRAPH_PATH = re.compile(r"^/(v\d+\.\d+)/([0-9A-Za-z_.]+)(?:/([a-z_]+))?/?$")


@dataclass(frozen=True)
class Upload:
    """A request body that is not JSON (a multipart media upload), handed to the Graph handler as it came."""

    content_type: str
    raw: bytes


@dataclass(frozen=True)
class Raw:
    """An answer that is not JSON: a media file's bytes."""

    content_type: str
    data: bytes
    filename: str | None = None


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

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        arrived = time.monotonic()
        sandbox = self.server.sandbox
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES:  # larger than Meta's largest media: refuse before reading it
            self.close_connection = True
            self._answer(*error_response(131053, f"The request body has {length} bytes; the most is "
                                                 f"{MAX_UPLOAD_BYTES}."))
            return
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        body: object
        if content_type.lower().startswith("multipart/"):
            body = Upload(content_type, raw)
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = ValueError
        query = dict(parse_qsl(url.query))
        result: dict | Raw
        try:
            if url.path.startswith("/_sandbox/"):
                status, result = sandbox.control(method, url.path.removeprefix("/_sandbox/"), body, query)
            elif url.path == URL_PATH:
                status, result = sandbox.download(query, self.headers.get("Authorization", ""))
                latency = sandbox.state.behaviour.latency_ms
                if latency > 0:
                    time.sleep(latency / 1000.0)
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
        self._answer(status, result)

    def _answer(self, status: int, result) -> None:
        if isinstance(result, Raw):
            payload, content_type = result.data, result.content_type
        else:
            payload, content_type = json.dumps(result, separators=(",", ":")).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if isinstance(result, Raw) and result.filename:
            self.send_header("Content-Disposition", f'attachment; filename="{result.filename}"')
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

    def _authorized(self, authorization: str) -> bool:
        token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        expected = self.state.behaviour.access_token
        return bool(token) and (expected is None or token == expected)

    def graph(self, method: str, path: str, query: dict, body, authorization: str,
              arrived: float | None = None) -> tuple[int, dict]:
        match = GRAPH_PATH.match(path)
        if match is None:
            return error_response(100, f"Unknown path components: {path}", subcode=2500,
                                  message=f"Unknown path components: {path}")
        version, object_id, edge = match.groups()
        if version not in self.state.behaviour.graph_versions:
            return error_response(100, f"Graph API version {version} does not exist or is no longer served; "
                                       f"Meta serves {', '.join(self.state.behaviour.graph_versions)}",
                                  subcode=2500, message=f"Unknown path components: {path}")
        if not self._authorized(authorization):
            return error_response(190, "Invalid OAuth access token - Cannot parse access token")
        if body is ValueError:
            return error_response(100, "The request body is not valid JSON.")
        if isinstance(body, Upload) and not (edge == "media" and method == "POST"):
            return error_response(100, "This endpoint takes a JSON body, not multipart/form-data.")
        state = self.state
        base_url = self.url + path
        number = state.numbers.get(object_id)
        if edge == "messages" and method == "POST":
            return graph.send_message(state, object_id, body, on_accepted=self.webhooks.message_accepted,
                                      arrived=arrived)
        if edge == "message_templates" and method == "GET":
            return graph.list_templates(state, object_id, query, base_url)
        if edge == "message_templates" and method == "POST":
            return graph.create_template(state, object_id, body)
        if edge == "phone_numbers" and method == "GET":
            return graph.list_phone_numbers(state, object_id, query, base_url)
        if edge in ("media", "whatsapp_business_profile"):
            if number is None:
                return graph.missing_get(object_id) if method == "GET" else graph._missing_object(object_id)
            return self._number_edge(method, edge, number, query, body)
        if edge is None and method == "GET":
            if number is not None:
                return graph.get_phone_number(state, number, query)
            if object_id in state.templates:
                return graph.get_waba(state, object_id, query)
            return (graph.media_info(state, object_id, self.url) or graph.get_template(state, object_id, query)
                    or graph.missing_get(object_id))
        if edge is None and method == "DELETE":
            with state.lock:
                deleted = state.media.delete(object_id)
            return (200, {"success": True}) if deleted else graph._missing_object(object_id)
        return error_response(100, f"Unsupported {method.lower()} request on {edge or object_id}.", subcode=33)

    def _number_edge(self, method: str, edge: str, number: PhoneNumber, query: dict, body) -> tuple[int, dict]:
        """``/{phone-number-id}/media`` (upload) and ``/{phone-number-id}/whatsapp_business_profile``."""
        if edge == "media" and method == "POST":
            if not isinstance(body, Upload):
                return error_response(100, "Upload media as multipart/form-data with the parts file, type and "
                                           "messaging_product.")
            return graph.upload_media(self.state, number, body.content_type, body.raw)
        if edge == "whatsapp_business_profile" and method == "GET":
            return graph.get_business_profile(self.state, number, query)
        if edge == "whatsapp_business_profile" and method == "POST":
            return graph.update_business_profile(self.state, number, body)
        return error_response(100, f"Unsupported {method.lower()} request on {edge}.", subcode=33)

    def download(self, query: dict, authorization: str) -> tuple[int, dict | Raw]:
        """GET of a media URL: the bytes, with the bearer token as Meta requires; 404 once the URL has expired."""
        if not self._authorized(authorization):
            return error_response(190, "Invalid OAuth access token - Cannot parse access token")
        with self.state.lock:
            media = self.state.media.resolve(query, time.time(), self.state.behaviour.media_ttl_seconds)
        if media is None:
            status, body = error_response(100, "The media URL is invalid or has expired; get a fresh one with "
                                               "GET /{media-id}.", subcode=33)
            return 404, body
        return 200, Raw(media.mime_type, media.data, media.filename)

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
            if method == "GET" and action == "reads":  # mark-as-read calls, oldest first
                with state.lock:
                    return 200, {"reads": list(state.reads)}
            if method == "GET" and action in ("inbound", "customers/inbound"):  # simulated messages, oldest first
                with state.lock:
                    return 200, {"inbound": list(state.inbound)}
            if method == "GET" and action == "customers":
                with state.lock:
                    return 200, {"customers": [c.as_json() for c in state.customers.by_user_id.values()]}
            if method == "GET" and action == "windows":
                return 200, {"windows": self.windows(query.get("phone_number_id"))}
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
            if action in ("customers/inbound", "inbound"):  # "inbound": the older name, same request
                number, contact, message, answer = inbound.build(state, body)
                self.webhooks.inbound(number, contact, message)
                return 200, {**answer, "webhook_url": state.behaviour.webhook_url}
            if action == "windows":
                return 200, self.set_window(data)
            if action == "reset":
                with state.lock:
                    state.reset_records()
                return 200, {"reset": True}
        except inbound.InboundError as exc:
            return 400, {"error": f"bad sandbox request: {exc}"}
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": f"bad sandbox request: {exc!r}"}
        return 404, {"error": f"no such sandbox action: {method} {action}"}

    def windows(self, phone_number_id: str | None = None) -> list[dict]:
        """Every customer-service window the sandbox knows, open or not, with when it closes (unix seconds)."""
        state = self.state
        with state.lock:
            now, length = time.time(), state.behaviour.window_seconds
            return [{"phone_number_id": number_id, "user_id": user_id,
                     "wa_id": (customer.wa_id if (customer := state.customers.by_user_id.get(user_id)) else None),
                     "last_inbound_at": at, "open_until": at + length, "open": now < at + length}
                    for (number_id, user_id), at in state.customers.windows.items()
                    if phone_number_id is None or number_id == phone_number_id]

    def set_window(self, data: dict) -> dict:
        """Move a window's start without a webhook (``last_inbound_at``, unix seconds; 0 closes it): for tests of
        its edges and for benchmarks that reply to many customers."""
        state = self.state
        number_id = str(data["phone_number_id"])
        if number_id not in state.numbers:
            raise ValueError(f"phone_number_id {number_id!r} is not a number of this sandbox")
        at = float(data["last_inbound_at"])
        with state.lock:
            if data.get("user_id"):
                user_id = str(data["user_id"])
            else:
                user_id = state.customers.user_id_for_phone(str(data["from"]).lstrip("+"))
            state.customers.windows[(number_id, user_id)] = at
            length = state.behaviour.window_seconds
        return {"phone_number_id": number_id, "user_id": user_id, "last_inbound_at": at, "open_until": at + length}


def _behaviour_json(behaviour) -> dict:
    data = dict(vars(behaviour))
    for key in ("failure_rates", "status_failure_rates"):
        data[key] = {str(code): rate for code, rate in data[key].items()}
    return data
