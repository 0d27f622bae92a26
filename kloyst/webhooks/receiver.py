"""``POST /webhook/whatsapp``: a signed delivery committed, then answered 200, ahead of Pyramid's router.

What authenticates a POST is its ``X-Hub-Signature-256``: HMAC-SHA256 of the **raw** body
with the app secret. The body is hashed exactly as received — re-serialised JSON differs
from what Meta signed as soon as it holds an emoji or an accent — and compared in constant
time. A missing, wrong or ``sha1=`` signature is a 401 and nothing is stored. Nothing is
parsed here: the raw body goes to this process's group committer
(:mod:`kloyst.webhooks.committer`), and the answer is 200 only once the commit that holds
the delivery returned — a 200 means the delivery is in ``webhook_delivery`` (PostgreSQL, or
the embedded default's SQLite) and survives anything short of losing the database. A
commit that fails or does not finish within ``kloyst.webhooks.commit_timeout_seconds`` is
a 503, which Meta retries.

Why ahead of the router: this is Kloyst's hottest request (Meta sends about three status
callbacks per message sent), and routing, tweens and the transaction manager cost about
four times the work itself (measured: 0.13 ms against 0.03 ms a request). So the app's
execution policy (Pyramid's hook in front of request creation, set for every Kloyst app)
answers these POSTs itself and hands everything else to Pyramid. It keeps what the tweens
would have given this request: the body limit of the path (``add_body_limit``), the
security headers, ``X-Request-ID`` and the network-log line, and the usual JSON error shape.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from pyramid.router import default_execution_policy

from kloyst import metrics as kmetrics
from kloyst.db import utcnow
from kloyst.http import access_log
from kloyst.http.errors import error_body
from kloyst.http.tweens import SECURITY_HEADERS, body_limit_for
from kloyst.webhooks.committer import GroupCommitter

SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="
ROUTE_NAME = "webhooks.whatsapp"
_OK = b'{"ok":true}'
_HEADERS = [("Content-Type", "application/json"), *SECURITY_HEADERS.items()]


def signature_problem(app_secret: bytes, body: bytes, header: str | None) -> str | None:
    """Why ``header`` does not sign ``body``, or None when it does."""
    if not header:
        return f"the {SIGNATURE_HEADER} header is missing; Meta signs every webhook with it"
    if not header.startswith(SIGNATURE_PREFIX):
        return f"{SIGNATURE_HEADER} must be sha256=<hex>; other algorithms (sha1=) are not accepted"
    expected = hmac.new(app_secret, body, hashlib.sha256).hexdigest().encode("ascii")
    if not hmac.compare_digest(expected, header[len(SIGNATURE_PREFIX):].encode("latin-1", "replace")):
        return ("the signature does not match the body: is META_APP_SECRET the secret of the Meta app that sends "
                "these webhooks?")
    return None


class _Answer:
    """A finished response, as the WSGI callable the router returns."""

    def __init__(self, status: str, body: bytes, request_id: str) -> None:
        self.status = status
        self.body = body
        self.headers = [*_HEADERS, ("Content-Length", str(len(body))), ("X-Request-ID", request_id)]

    def __call__(self, environ, start_response):
        start_response(self.status, self.headers)
        return [self.body]


def _error(status: str, code: str, message: str, details: dict | None = None) -> tuple[str, bytes]:
    return status, json.dumps(error_body(code, message, details), separators=(",", ":")).encode()


class Receiver:
    """The app's execution policy: webhook POSTs answered here, every other request routed by Pyramid."""

    def __init__(self, registry, path: str) -> None:
        self.registry = registry
        self.path = path
        self.secret = registry.settings["kloyst.meta.app_secret"].encode()
        self.committer = GroupCommitter(registry, registry.settings["kloyst.webhooks.commit_timeout_seconds"])

    def __call__(self, environ, router):
        if environ.get("PATH_INFO") != self.path or environ.get("REQUEST_METHOD") != "POST":
            return default_execution_policy(environ, router)
        started = time.perf_counter()
        request_id = access_log.request_id_for(environ.get("HTTP_X_REQUEST_ID"))
        raw_length = environ.get("CONTENT_LENGTH")
        length = int(raw_length) if raw_length and raw_length.isdigit() else None
        body, too_large = self._read(environ, length)
        status, answer = too_large or self.accept(body, environ.get("HTTP_X_HUB_SIGNATURE_256"))
        code = int(status[:3])
        metrics = kmetrics.of(self.registry)
        metrics.webhook_received(code)
        metrics.observe_request(ROUTE_NAME, "POST", code, time.perf_counter() - started)
        access_log.write_line(request_id=request_id, method="POST", path=self.path, route=ROUTE_NAME,
                              status=code, started=started, client=environ.get("REMOTE_ADDR"),
                              user_agent=environ.get("HTTP_USER_AGENT"), bytes_in=length, vendor_id=None)
        return _Answer(status, answer, request_id)

    def _read(self, environ, length: int | None) -> tuple[bytes, tuple[str, bytes] | None]:
        """The body, or the 413 to answer instead: the path's ``add_body_limit``, as the tween applies it."""
        limit = body_limit_for(self.registry, self.path)
        if length is not None and length > limit:
            return b"", _error("413 Payload Too Large", "payload_too_large",
                               f"the request body is {length} bytes; the limit here is {limit} bytes",
                               {"limit_bytes": limit})
        if length is not None:
            body = environ["wsgi.input"].read(length)
        elif environ.get("wsgi.input_terminated"):
            body = environ["wsgi.input"].read(limit + 1)
        else:
            body = b""  # no length and no end of input: nothing that could be signed
        if len(body) > limit:  # a streamed body is read one byte past the limit, no further
            return b"", _error("413 Payload Too Large", "payload_too_large",
                               f"the request body exceeds the limit of {limit} bytes", {"limit_bytes": limit})
        return body, None

    def accept(self, body: bytes, signature: str | None) -> tuple[str, bytes]:
        """Check the signature and commit the body; the status line and JSON body to answer."""
        problem = signature_problem(self.secret, body, signature)
        if problem is not None:
            return _error("401 Unauthorized", "invalid_signature", problem)
        if not self.committer.submit(body, utcnow()):  # Meta retries anything but a 2xx: nothing is lost
            return _error("503 Service Unavailable", "service_unavailable",
                          "the webhook could not be stored right now; it will be retried")
        return "200 OK", _OK
