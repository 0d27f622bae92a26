"""The one way Kloyst talks to Meta's Graph API: pooled keep-alive connections, a Graph version from settings,
every answer either parsed JSON or a classified :class:`~kloyst.meta.errors.MetaError`.

Why urllib3 and not ``requests``: the send path is the hot path (≥ 1,000 messages/s per number on two cores).
Measured on this machine (issue 5, Performance), a ``requests`` call costs about 4× the CPU of a pooled
urllib3/``http.client`` call, and the bare send pipeline drops from ~9,000/s to ~2,200/s with ``requests``.
urllib3 ships with ``requests``, so this adds no dependency; it gives the same keep-alive pool without the
per-call session, hook and adapter machinery.

Guarantees:

- Thread-safe: one client (one ``PoolManager``) is shared by every worker thread. The pool blocks when all
  ``max_connections`` are busy instead of opening throwaway connections, so TLS handshakes stay rare; size it
  to the in-flight requests you need (rate × latency: 1,000/s × 0.1 s ≈ 100).
- No retries here, not even urllib3's: the outbox owns retries, backoff and dead-letters, and a silent retry
  of a send could deliver a message twice. Redirects are not followed either.
- The token goes only into the ``Authorization`` header, never into a URL, a log line or an error message.
  Kloyst is multi-tenant, so each call may pass its own ``token=`` (the vendor's WABA token); the client's
  token (a string or a callable returning one) is the default.
- ``x-app-usage`` and ``x-business-use-case-usage`` are parsed on every answer, errors included, and handed to
  ``on_usage(usage, method, path)`` so senders can slow down before Meta starts refusing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from urllib3 import encode_multipart_formdata
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from kloyst.meta.errors import MetaError
from kloyst.meta.usage import Usage, parse_usage
from kloyst.meta.wire import GraphWire, WireError

log = logging.getLogger(__name__)

TokenSource = str | Callable[[], str]
UsageCallback = Callable[[Usage, str, str], None]

# Guards a paging loop against a cursor that never ends (a bug on either side must not spin forever).
MAX_PAGES = 1000


@dataclass(frozen=True)
class MetaResponse:
    status: int
    data: Any
    usage: Usage
    fbtrace_id: str | None


class MetaClient:
    def __init__(self, graph_url: str, graph_version: str, token: TokenSource | None = None, *,
                 timeout: float = 10.0, max_connections: int = 128,
                 on_usage: UsageCallback | None = None) -> None:
        self.base_url = f"{graph_url.rstrip('/')}/{graph_version.strip('/')}"
        self._token = token
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._on_usage = on_usage
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=max_connections, block=True,
                                         retries=False, timeout=self._timeout)
        # Sends take the lean path (kloyst.meta.wire): one keep-alive socket per calling thread.
        self._wire = GraphWire(self.base_url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], token: TokenSource | None = None, *,
                      on_usage: UsageCallback | None = None) -> MetaClient:
        return cls(settings["kloyst.meta.graph_url"], settings["kloyst.meta.graph_version"], token,
                   timeout=float(settings.get("kloyst.meta.timeout_seconds", 10.0)),
                   max_connections=int(settings.get("kloyst.meta.max_connections", 128)), on_usage=on_usage)

    def close(self) -> None:
        self._pool.clear()
        self._wire.close()

    def __enter__(self) -> MetaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def warm_up(self) -> None:
        """Connect this thread's send connection ahead of its first send (best effort)."""
        try:
            self._wire.warm_up()
        except WireError as exc:
            log.debug("meta: could not open a connection ahead of time: %s", exc)

    def send_message(self, phone_number_id: str, payload: Mapping[str, Any] | bytes, *,
                     token: TokenSource | None = None) -> tuple[str, dict[str, Any]]:
        """POST a message (build it with :mod:`kloyst.meta.payloads`); return Meta's ``wamid`` and the answer.

        ``payload`` may also be its JSON already encoded (the sender posts a message's stored content as is).

        A 200 only means "accepted": delivery arrives later as status webhooks. This is the hot path, so
        it goes through :mod:`kloyst.meta.wire` rather than urllib3 (same errors, a quarter of the CPU).
        """
        data = self._post_lean(f"{_segment(phone_number_id)}/messages", payload, token)
        try:
            wamid = data["messages"][0]["id"]
        except (KeyError, IndexError, TypeError):
            raise MetaError("accepted answer without messages[0].id", http_status=200,
                            maybe_accepted=True) from None
        return wamid, data

    def mark_read(self, meta_phone_number_id: str, wamid: str, *, token: TokenSource | None = None) -> None:
        """Mark an inbound message (and the earlier ones of its chat) read: the customer sees blue ticks.

        Meta answers ``{"success": true}``; anything else is a :class:`MetaError`.
        """
        body = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
        data = self.request("POST", f"{_segment(meta_phone_number_id)}/messages", body=body, token=token).data
        if not isinstance(data, dict) or data.get("success") is not True:
            raise MetaError(f"mark as read answered without success: {str(data)[:200]}", http_status=200)

    def upload_media(self, meta_phone_number_id: str, data: bytes, mime_type: str, filename: str, *,
                     token: TokenSource | None = None) -> str:
        """Upload a file for the number to send (``POST /{phone-number-id}/media``, multipart); Meta's media id.

        The caller checks type and size against Meta's limits first: Meta refuses the rest (100, 131053).
        """
        fields: list[tuple[str, str | tuple[str, bytes, str]]] = [
            ("messaging_product", "whatsapp"), ("type", mime_type), ("file", (filename, data, mime_type))]
        body, content_type = encode_multipart_formdata(fields)
        answer = self._call("POST", f"{_segment(meta_phone_number_id)}/media", body, content_type, token).data
        media_id = answer.get("id") if isinstance(answer, dict) else None
        if not media_id:
            raise MetaError("media upload answered without an id", http_status=200, maybe_accepted=True)
        return str(media_id)

    def media_info(self, media_id: str, *, token: TokenSource | None = None) -> dict[str, Any]:
        """``GET /{media-id}``: ``url`` (valid for minutes, fetch it with :meth:`download_media`), ``mime_type``,
        ``sha256``, ``file_size`` (an int; Meta's document shows it as a string) and ``id``.

        Media Meta no longer keeps (30 days after upload or receipt) is a :class:`MetaError` (code 100).
        """
        data = self.request("GET", _segment(media_id), token=token).data
        if not isinstance(data, dict) or not data.get("url"):
            raise MetaError(f"media {media_id}: answer without a url", http_status=200)
        info = dict(data)
        try:
            info["file_size"] = int(info["file_size"]) if info.get("file_size") is not None else None
        except (TypeError, ValueError):
            info["file_size"] = None
        return info

    def download_media(self, url: str, *, token: TokenSource | None = None, max_bytes: int) -> bytes:
        """The bytes behind a media URL from :meth:`media_info`, fetched with the bearer token as Meta requires.

        A body over ``max_bytes`` is refused without being read whole: by its Content-Length when it
        says so, else once more than ``max_bytes`` have arrived. Either way a :class:`MetaError`.
        """
        headers = {"Authorization": f"Bearer {self._resolve_token(token)}"}
        try:
            response = self._pool.request("GET", url, headers=headers, redirect=False, retries=False,
                                          timeout=self._timeout, preload_content=False)
        except (NewConnectionError, ConnectTimeoutError) as exc:
            raise MetaError.network(exc, maybe_accepted=False) from None
        except HTTPError as exc:
            raise MetaError.network(exc, maybe_accepted=False) from None
        complete = False
        try:
            if not 200 <= response.status < 300:
                raise MetaError.from_response(response.status, response.read(64 * 1024),
                                              response.headers.get("x-fb-trace-id"))
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise MetaError(f"media is {declared} bytes, more than the {max_bytes} allowed",
                                http_status=response.status)
            chunks, size = [], 0
            for chunk in response.stream(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise MetaError(f"media is more than the {max_bytes} bytes allowed", http_status=response.status)
                chunks.append(chunk)
            complete = True
            return b"".join(chunks)
        except HTTPError as exc:
            raise MetaError.network(exc, maybe_accepted=False) from None
        finally:
            if not complete:  # unread bytes are left on the wire: the connection cannot serve another request
                response.close()
            response.release_conn()

    def list_templates(self, waba_id: str, *, limit: int = 100, after: str | None = None,
                       fields: str | None = None, token: TokenSource | None = None) -> list[dict[str, Any]]:
        """Every template of the WABA, following ``paging.cursors.after`` from ``after`` to the end."""
        params = {"limit": limit} | ({"fields": fields} if fields else {})
        return list(self.iter_pages(f"{_segment(waba_id)}/message_templates", params, after=after, token=token))

    def create_template(self, waba_id: str, body: Mapping[str, Any], *,
                        token: TokenSource | None = None) -> dict[str, Any]:
        """Submit a template for review; Meta answers ``{id, status, category}``."""
        return self.request("POST", f"{_segment(waba_id)}/message_templates", body=body, token=token).data

    def list_phone_numbers(self, waba_id: str, *, limit: int = 100, fields: str | None = None,
                           token: TokenSource | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit} | ({"fields": fields} if fields else {})
        return list(self.iter_pages(f"{_segment(waba_id)}/phone_numbers", params, token=token))

    def iter_pages(self, path: str, params: Mapping[str, Any] | None = None, *, after: str | None = None,
                   token: TokenSource | None = None) -> Iterator[dict[str, Any]]:
        """Yield the ``data`` items of a Graph list, page after page.

        Meta keeps returning ``cursors.after`` on the last page too (only ``next`` disappears), so the loop
        stops on a page without ``next``, an empty page, or a cursor it has already seen.
        """
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            query = dict(params or {}) | ({"after": after} if after else {})
            page = self.request("GET", path, params=query, token=token).data
            if not isinstance(page, dict):
                return
            items = page.get("data") or []
            yield from items
            paging = page.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not items or not after or after in seen or "next" not in paging:
                return
            seen.add(after)
        raise MetaError(f"{path}: more than {MAX_PAGES} pages; stopping", http_status=200)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                body: Any = None, token: TokenSource | None = None) -> MetaResponse:
        """One Graph call: parsed JSON on 2xx, :class:`MetaError` otherwise (network failures included)."""
        encoded = None
        if body is not None:
            encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return self._call(method, path, encoded, "application/json" if body is not None else None, token,
                          "?" + urlencode(params) if params else "")

    def _call(self, method: str, path: str, encoded: bytes | None, content_type: str | None,
              token: TokenSource | None, query: str = "") -> MetaResponse:
        url = f"{self.base_url}/{path.lstrip('/')}{query}"
        headers = {"Authorization": f"Bearer {self._resolve_token(token)}", "Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        started = time.perf_counter()
        try:
            response = self._pool.request(method, url, body=encoded, headers=headers, redirect=False,
                                          retries=False, timeout=self._timeout)
        except (NewConnectionError, ConnectTimeoutError) as exc:
            # Nothing reached Meta: safe to retry without risk of a duplicate.
            log.debug("meta %s %s: cannot connect (%s)", method, path, type(exc).__name__)
            raise MetaError.network(exc, maybe_accepted=False) from None
        except HTTPError as exc:
            # The request may have left: Meta may have accepted a send whose answer we never read.
            log.debug("meta %s %s: no answer (%s)", method, path, type(exc).__name__)
            raise MetaError.network(exc, maybe_accepted=method != "GET") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.debug("meta %s %s → %s in %.1f ms", method, path, response.status, elapsed_ms)
        return self._answer(method, path, response.status, response.headers, response.data)

    def _answer(self, method: str, path: str, status: int, headers: Mapping[str, str], body: bytes) -> MetaResponse:
        """Usage headers reported, then parsed JSON on 2xx or a classified :class:`MetaError` (both transports)."""
        usage = parse_usage(headers)
        trace = headers.get("x-fb-trace-id")
        if usage and self._on_usage is not None:
            self._on_usage(usage, method, path)
        if not 200 <= status < 300:
            raise MetaError.from_response(status, body, trace)
        try:
            data = json.loads(body) if body else {}
        except (ValueError, UnicodeDecodeError):
            raise MetaError(f"HTTP {status} with a body that is not JSON", http_status=status, fbtrace_id=trace,
                            maybe_accepted=method != "GET") from None
        return MetaResponse(status, data, usage, trace)

    def _post_lean(self, path: str, body: Any, token: TokenSource | None) -> Any:
        encoded = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":"),
                                                                   ensure_ascii=False).encode()
        try:
            status, raw_headers, data = self._wire.post_json(path, encoded, self._resolve_token(token))
        except WireError as exc:
            log.debug("meta POST %s: %s", path, exc)
            raise MetaError(f"network error: {exc}", type=MetaError.NETWORK, maybe_accepted=exc.sent) from None
        log.debug("meta POST %s → %s", path, status)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw_headers.items()}
        return self._answer("POST", path, status, headers, data).data

    def _resolve_token(self, token: TokenSource | None) -> str:
        source = token if token is not None else self._token
        if source is None:
            raise ValueError("no Meta access token: pass token= to the call or to MetaClient")
        return source() if callable(source) else source


def _segment(value: str) -> str:
    # Ids are digits in practice; quoting keeps a malformed one from reaching another path.
    return quote(str(value), safe="")
