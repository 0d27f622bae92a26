"""MetaClient against a real HTTP server on a free port that answers with canned Meta responses.

The server speaks HTTP/1.1 keep-alive like Graph does, counts the TCP connections it accepts and records
every request, so the tests can check connection reuse and the headers the client sent.
"""

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from kloyst.meta import ErrorKind, MetaClient, MetaError, template_payload, text_payload

TOKEN = "EAAG-secret-token-never-logged"
BUC = {"102290129340398": [{"type": "whatsapp", "call_count": 85, "total_cputime": 3, "total_time": 4,
                            "estimated_time_to_regain_access": 2}]}


class CannedMeta(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default backlog of 5 drops concurrent connects (1 s SYN retry)

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.requests = []
        self.lock = threading.Lock()
        self.respond = lambda request: (200, {}, b"{}")

    def process_request(self, request, client_address):
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        pass  # a client that timed out and hung up is what some tests do on purpose

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body leave in two writes; without NODELAY, Nagle and delayed ACKs add ~40 ms to each.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        parts = urlsplit(self.path)
        request = {"method": self.command, "path": parts.path, "query": parse_qs(parts.query),
                   "headers": dict(self.headers), "body": json.loads(self.rfile.read(length)) if length else None}
        with self.server.lock:
            self.server.requests.append(request)
        status, headers, body = self.server.respond(request)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture
def meta():
    server = CannedMeta()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(meta):
    with MetaClient(meta.url, "v23.0", TOKEN, timeout=2.0, max_connections=32) as client:
        yield client


def sent(request):
    wamid = f"wamid.{request['body']['to']}.{time.monotonic_ns()}"
    body = {"messaging_product": "whatsapp", "contacts": [{"input": request["body"]["to"], "wa_id": "15551234567"}],
            "messages": [{"id": wamid, "message_status": "accepted"}]}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def envelope(status, code, subcode=None, message="error", **extra):
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdTrace"} | extra
    if subcode is not None:
        error["error_subcode"] = subcode
    return lambda request: (status, {"Content-Type": "application/json"}, json.dumps({"error": error}).encode())


def test_send_message_posts_to_the_versioned_path_and_returns_the_wamid(meta, client):
    meta.respond = sent
    wamid, raw = client.send_message("1234567890", text_payload("+15551234567", "hello"))
    assert wamid.startswith("wamid.+15551234567")
    assert raw["contacts"][0]["wa_id"] == "15551234567"
    request = meta.requests[0]
    assert (request["method"], request["path"]) == ("POST", "/v23.0/1234567890/messages")
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {"messaging_product": "whatsapp", "recipient_type": "individual",
                               "to": "+15551234567", "type": "text", "text": {"body": "hello", "preview_url": False}}


def test_a_payload_already_encoded_as_json_is_posted_as_it_is(meta, client):
    meta.respond = sent
    payload = text_payload("+15551234567", "héllo")
    encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    wamid, _ = client.send_message("1234567890", encoded)
    assert wamid.startswith("wamid.+15551234567")
    assert meta.requests[0]["body"] == payload


def test_a_per_call_token_overrides_the_clients_and_a_callable_token_is_asked_each_call(meta):
    meta.respond = sent
    tokens = iter(["first", "second"])
    with MetaClient(meta.url, "v23.0", lambda: next(tokens)) as client:
        client.send_message("1", text_payload("1", "a"))
        client.send_message("1", text_payload("1", "b"))
        client.send_message("1", text_payload("1", "c"), token="vendor-waba-token")
    assert [r["headers"]["Authorization"] for r in meta.requests] == [
        "Bearer first", "Bearer second", "Bearer vendor-waba-token"]


def test_template_payloads_reach_meta_with_positional_and_named_parameters(meta, client):
    meta.respond = sent
    client.send_message("1", template_payload("15550001111", "order_ready", "en_US", body=["Ann", "A-17"],
                                              header=["Ann"], biz_opaque_callback_data="msg-42"))
    client.send_message("1", template_payload("15550001111", "welcome", "pt_BR", body={"first_name": "Ana"},
                                              buttons=[{"sub_type": "url", "index": 0,
                                                        "parameters": ["track/A-17"]}]))
    positional, named = (r["body"] for r in meta.requests)
    assert positional["type"] == "template" and positional["biz_opaque_callback_data"] == "msg-42"
    assert positional["template"] == {"name": "order_ready", "language": {"code": "en_US"}, "components": [
        {"type": "header", "parameters": [{"type": "text", "text": "Ann"}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-17"}]}]}
    assert named["template"]["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "Ana", "parameter_name": "first_name"}]},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "track/A-17"}]}]


@pytest.mark.parametrize(("status", "code", "subcode", "kind"), [
    (400, 132001, None, ErrorKind.PERMANENT),
    (400, 131047, None, ErrorKind.PERMANENT),
    (429, 130429, None, ErrorKind.RATE_LIMITED),
    (400, 131056, 2494055, ErrorKind.RATE_LIMITED),
    (401, 190, 463, ErrorKind.AUTH),
    (500, 131000, None, ErrorKind.TRANSIENT),
])
def test_meta_error_envelopes_become_classified_meta_errors(meta, client, status, code, subcode, kind):
    meta.respond = envelope(status, code, subcode, message=f"(#{code}) failed",
                            error_data={"messaging_product": "whatsapp", "details": "why it failed"})
    with pytest.raises(MetaError) as caught:
        client.send_message("1", text_payload("1", "x"))
    error = caught.value
    assert (error.http_status, error.code, error.subcode, error.kind) == (status, code, subcode, kind)
    assert error.details == "why it failed" and error.fbtrace_id == "AbCdTrace"


def test_an_html_502_from_a_proxy_is_a_transient_error(meta, client):
    meta.respond = lambda request: (502, {"Content-Type": "text/html"}, b"<html><h1>502 Bad Gateway</h1></html>")
    with pytest.raises(MetaError) as caught:
        client.send_message("1", text_payload("1", "x"))
    assert caught.value.http_status == 502 and caught.value.code is None
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert "502 Bad Gateway" in caught.value.message


def test_an_empty_error_body_is_classified_by_its_status(meta, client):
    meta.respond = lambda request: (503, {}, b"")
    with pytest.raises(MetaError) as caught:
        client.list_phone_numbers("waba")
    assert caught.value.kind is ErrorKind.TRANSIENT and "(empty body)" in caught.value.message


def test_a_200_without_a_wamid_is_an_error_that_may_have_been_accepted(meta, client):
    meta.respond = lambda request: (200, {}, b'{"messaging_product": "whatsapp"}')
    with pytest.raises(MetaError) as caught:
        client.send_message("1", text_payload("1", "x"))
    assert caught.value.maybe_accepted


def test_an_answer_slower_than_the_timeout_is_a_transient_network_error(meta):
    def slow(request):
        time.sleep(2.0)
        return sent(request)

    meta.respond = slow
    with MetaClient(meta.url, "v23.0", TOKEN, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(MetaError) as caught:
            client.send_message("1", text_payload("1", "x"))
        assert time.monotonic() - started < 1.5  # the 0.2 s timeout, not the 2 s answer, ended the call
    error = caught.value
    assert error.is_network and error.kind is ErrorKind.TRANSIENT
    assert error.maybe_accepted, "the request left: Meta may have accepted it"


def test_a_refused_connection_is_a_network_error_that_was_not_accepted():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with MetaClient(f"http://127.0.0.1:{port}", "v23.0", TOKEN, timeout=1.0) as client, \
            pytest.raises(MetaError) as caught:
        client.send_message("1", text_payload("1", "x"))
    assert caught.value.is_network and caught.value.kind is ErrorKind.TRANSIENT
    assert not caught.value.maybe_accepted


def paged(items, page_size):
    """A Graph list endpoint: cursors on every page (the last one too), `next` only while more remain."""
    def respond(request):
        start = int(request["query"].get("after", ["0"])[0])
        chunk = items[start:start + page_size]
        end = start + len(chunk)
        paging = {"cursors": {"before": str(start), "after": str(end)}}
        if end < len(items):
            paging["next"] = f"https://graph.facebook.com/v23.0/x?after={end}"
        return 200, {}, json.dumps({"data": chunk, "paging": paging}).encode()
    return respond


def test_list_templates_follows_the_after_cursor_across_pages(meta, client):
    templates = [{"id": str(i), "name": f"t{i}", "language": "en_US", "status": "APPROVED"} for i in range(5)]
    meta.respond = paged(templates, 3)
    assert client.list_templates("waba-1", limit=3) == templates
    assert [r["path"] for r in meta.requests] == ["/v23.0/waba-1/message_templates"] * 2
    assert [r["query"].get("after") for r in meta.requests] == [None, ["3"]]
    assert meta.requests[0]["query"]["limit"] == ["3"]


def test_list_templates_can_resume_from_a_cursor(meta, client):
    templates = [{"id": str(i)} for i in range(5)]
    meta.respond = paged(templates, 3)
    assert client.list_templates("waba-1", limit=3, after="3") == templates[3:]


def test_list_phone_numbers_follows_paging(meta, client):
    numbers = [{"id": f"10{i}", "display_phone_number": f"+1 555-000-000{i}", "quality_rating": "GREEN"}
               for i in range(4)]
    meta.respond = paged(numbers, 2)
    assert client.list_phone_numbers("waba-9", limit=2, fields="id,quality_rating") == numbers
    assert len(meta.requests) == 2
    assert meta.requests[0]["path"] == "/v23.0/waba-9/phone_numbers"
    assert meta.requests[0]["query"]["fields"] == ["id,quality_rating"]


def test_create_template_posts_the_body_and_returns_metas_answer(meta, client):
    meta.respond = lambda request: (200, {}, b'{"id": "594425479261596", "status": "PENDING", "category": "UTILITY"}')
    body = {"name": "order_ready", "category": "UTILITY", "language": "en_US", "parameter_format": "NAMED",
            "components": [{"type": "BODY", "text": "Hi {{first_name}}",
                            "example": {"body_text_named_params": [{"param_name": "first_name", "example": "Ann"}]}}]}
    assert client.create_template("waba-1", body) == {"id": "594425479261596", "status": "PENDING",
                                                      "category": "UTILITY"}
    assert meta.requests[0]["body"] == body and meta.requests[0]["method"] == "POST"


def test_usage_headers_are_parsed_and_handed_to_the_callback_on_success_and_error(meta):
    headers = {"x-app-usage": '{"call_count": 12, "total_cputime": 3, "total_time": 5}',
               "x-business-use-case-usage": json.dumps(BUC), "x-fb-trace-id": "trace-1"}
    seen = []
    with MetaClient(meta.url, "v23.0", TOKEN, on_usage=lambda usage, method, path: seen.append((usage, path))) \
            as client:
        meta.respond = lambda request: (200, headers, b'{"data": []}')
        response = client.request("GET", "waba/phone_numbers")
        meta.respond = lambda request: (400, headers, b'{"error": {"code": 80007, "message": "WABA limit"}}')
        with pytest.raises(MetaError):
            client.request("GET", "waba/phone_numbers")
    assert response.usage.app == {"call_count": 12, "total_cputime": 3, "total_time": 5}
    (business,) = response.usage.business
    assert (business.business_id, business.type, business.call_count) == ("102290129340398", "whatsapp", 85)
    assert response.usage.max_percent == 85 and response.usage.regain_access_minutes == 2
    assert response.fbtrace_id == "trace-1"
    assert [path for _, path in seen] == ["waba/phone_numbers", "waba/phone_numbers"]


def test_malformed_usage_headers_are_ignored(meta, client):
    meta.respond = lambda request: (200, {"x-app-usage": "not json", "x-business-use-case-usage": "[1]"}, b"{}")
    assert not client.request("GET", "x").usage


def test_the_token_is_sent_but_never_logged(meta, client, caplog):
    caplog.set_level(logging.DEBUG)
    meta.respond = sent
    client.send_message("1", text_payload("1", "x"))
    meta.respond = envelope(401, 190, 463, message="Error validating access token")
    with pytest.raises(MetaError) as caught:
        client.send_message("1", text_payload("1", "x"))
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in meta.requests)
    assert any(record.name.startswith("kloyst.meta") for record in caplog.records)
    assert TOKEN not in caplog.text and TOKEN not in str(caught.value)


def test_sequential_calls_reuse_one_keep_alive_connection(meta, client):
    meta.respond = sent
    for i in range(10):
        client.send_message("1", text_payload(str(i), "x"))
    meta.respond = envelope(400, 100)
    with pytest.raises(MetaError):
        client.send_message("1", text_payload("1", "x"))
    meta.respond = sent
    client.send_message("1", text_payload("1", "x"))
    assert len(meta.requests) == 12
    assert meta.connections == 1


def test_twenty_threads_share_one_client_and_every_send_succeeds(meta, client):
    meta.respond = sent
    results, failures = [], []

    def sender(thread):
        for i in range(10):
            try:
                results.append(client.send_message("1", text_payload(f"{thread}-{i}", "x"))[0])
            except Exception as exc:  # collected, asserted below
                failures.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(set(results)) == 200
    assert meta.connections <= 32, "the pool bounds the connections instead of opening one per call"


def test_from_settings_uses_the_graph_url_version_and_pool_settings(meta):
    settings = {"kloyst.meta.graph_url": meta.url + "/", "kloyst.meta.graph_version": "v23.0",
                "kloyst.meta.timeout_seconds": 5.0, "kloyst.meta.max_connections": 4}
    meta.respond = sent
    with MetaClient.from_settings(settings, TOKEN) as client:
        assert client.base_url == f"{meta.url}/v23.0"
        client.send_message("77", text_payload("1", "x"))
    assert meta.requests[0]["path"] == "/v23.0/77/messages"


def test_the_meta_settings_resolve_from_the_environment_into_the_client(meta):
    from kloyst.config import CORE_SETTINGS, resolve

    table = tuple(s for s in CORE_SETTINGS if s.key.startswith("kloyst.meta.") and not s.required)
    settings = resolve({"kloyst.meta.graph_url": meta.url}, table,
                       {"META_TIMEOUT_SECONDS": "2.5", "META_MAX_CONNECTIONS": "8"})
    assert (settings["kloyst.meta.timeout_seconds"], settings["kloyst.meta.max_connections"]) == (2.5, 8)
    meta.respond = sent
    with MetaClient.from_settings(settings, TOKEN) as client:
        assert client.send_message("5", text_payload("1", "x"))[0].startswith("wamid.")
    assert meta.requests[0]["path"] == "/v23.0/5/messages"


# --- media, read receipts and BSUID recipients, against the Meta sandbox ------------------------------------

@pytest.fixture
def sandboxed():
    """The Meta sandbox with its demo WABA, and a client of it; a customer has written, so the window is open."""
    from kloyst.sandbox import SandboxServer, SandboxState
    from kloyst.sandbox.embedded import DEMO_NUMBERS, seed
    from kloyst.sandbox.state import Behaviour

    state = SandboxState(app_secret="client-test", behaviour=Behaviour(latency_ms=0))
    seed(state)
    server = SandboxServer(state).start()
    number = DEMO_NUMBERS[0][0]
    status, customer = server.control("POST", "customers/inbound", {"phone_number_id": number,
                                                                    "username": "ada.l", "text": "hi"}, {})
    assert status == 200
    with MetaClient(server.url, "v23.0", TOKEN, timeout=5.0) as client:
        yield server, client, number, customer
    server.close()


def test_media_goes_up_comes_back_described_and_downloads_whole(sandboxed):
    server, client, number, _ = sandboxed
    data = b"%PDF-1.4 " + bytes(range(256)) * 40
    media_id = client.upload_media(number, data, "application/pdf", "invoice.pdf", token="vendor-token")
    info = client.media_info(media_id, token="vendor-token")
    assert info["id"] == media_id and info["mime_type"] == "application/pdf"
    assert info["file_size"] == len(data) and isinstance(info["file_size"], int)
    assert client.download_media(info["url"], token="vendor-token", max_bytes=len(data)) == data


def test_a_download_over_max_bytes_is_refused_by_its_declared_length(sandboxed):
    _, client, number, _ = sandboxed
    info = client.media_info(client.upload_media(number, b"\xff\xd8\xff" * 1000, "image/jpeg", "a.jpg"))
    with pytest.raises(MetaError) as refused:
        client.download_media(info["url"], max_bytes=2999)
    assert "more than the 2999" in str(refused.value) and refused.value.kind == ErrorKind.PERMANENT


def test_a_download_without_a_length_is_cut_off_past_max_bytes():
    """A body sent chunked (no Content-Length) is read only until it passes ``max_bytes``."""
    listener = socket.create_server(("127.0.0.1", 0))
    sent_chunks = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(1000):  # up to 64 MB, if anyone read that far
                    conn.sendall(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
                    sent_chunks.append(1)
            except OSError:
                pass  # the client hung up, as it should

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with MetaClient(url, "v23.0", TOKEN, timeout=5.0) as client, \
            pytest.raises(MetaError, match="more than the 100000 bytes"):
        client.download_media(f"{url}/media", max_bytes=100_000)
    thread.join(timeout=10)
    listener.close()
    assert len(sent_chunks) < 1000


def test_expired_or_unknown_media_is_a_meta_error(sandboxed):
    server, client, number, _ = sandboxed
    with pytest.raises(MetaError) as unknown:
        client.media_info("123456789")
    assert (unknown.value.code, unknown.value.subcode) == (100, 33)
    media_id = client.upload_media(number, b"RIFF....WEBP", "image/webp", "s.webp")
    server.state.behaviour.update({"media_url_ttl_seconds": 0})  # a URL Meta gave out lives minutes
    info = client.media_info(media_id)
    with pytest.raises(MetaError) as expired:
        client.download_media(info["url"], max_bytes=1000)
    assert expired.value.http_status == 404


def test_an_upload_meta_refuses_is_a_meta_error(sandboxed):
    _, client, number, _ = sandboxed
    with pytest.raises(MetaError) as refused:
        client.upload_media(number, b"GIF89a", "image/gif", "a.gif")
    assert refused.value.code == 100 and "image/gif" in refused.value.details


def test_mark_read_sends_metas_read_receipt(sandboxed):
    server, client, number, customer = sandboxed
    assert client.mark_read(number, customer["id"], token="vendor-token") is None
    assert [r["message_id"] for r in server.state.reads] == [customer["id"]]
    with pytest.raises(MetaError) as refused:
        client.mark_read(number, "not-a-wamid")
    assert refused.value.code == 100


def test_send_message_takes_a_bsuid_recipient(sandboxed):
    from kloyst.meta import message_payload

    _, client, number, customer = sandboxed
    wamid, answer = client.send_message(number, text_payload(None, "Thanks!", recipient=customer["user_id"]))
    assert wamid.startswith("wamid.")
    assert answer["contacts"] == [{"input": customer["user_id"], "user_id": customer["user_id"]}]
    location = message_payload(None, "location", {"latitude": 52.5, "longitude": 13.4},
                               recipient=customer["user_id"])
    assert client.send_message(number, location)[0].startswith("wamid.")
    with pytest.raises(MetaError) as refused:
        client.send_message(number, template_payload(None, "order_update", "en_US", body=["Ann"],
                                                     recipient=customer["user_id"]))
    assert refused.value.code == 132000


def test_payload_builders_take_a_phone_or_a_bsuid_never_both():
    assert text_payload(None, "hi", recipient="US.1")["recipient"] == "US.1"
    assert "recipient" not in text_payload("+15551234567", "hi")
    with pytest.raises(ValueError):
        text_payload("+15551234567", "hi", recipient="US.1")
    with pytest.raises(ValueError):
        template_payload(None, "welcome", "en_US")
