"""The exceptions views and services raise; each becomes one JSON error shape.

``{"error": {"code": "...", "message": "...", "details": {...}}}`` for every 4xx/5xx (see
:mod:`kloyst.http.errors`). ``code`` is stable and machine-readable; ``message`` tells a
person what to fix.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details if details is not None else {}
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "authentication required: send a valid bearer access token", **kw) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="kloyst"'})
        super().__init__(message, **kw)


class PaymentRequired(ApiError):
    status, code = 402, "payment_required"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Gone(ApiError):
    """What was asked for existed and will not again (pruned by retention, quarantined): retrying cannot help."""

    status, code = 410, "gone"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(ApiError):
    """A 422: the request is well formed but something in it cannot be accepted.

    Every 422 carries ``details.fields``, a list of ``{"field", "problem"}``, so a client
    has one place to look for what to fix. Give ``fields`` when several things are wrong,
    ``field`` when one named field is, and neither when the problem belongs to no single
    field (the list is then empty and ``message`` says it all).
    """

    status, code = 422, "validation_failed"

    def __init__(self, message: str, *, field: str | None = None, fields: list[dict] | None = None,
                 **kw) -> None:
        details = dict(kw.pop("details", None) or {})
        if fields is None:
            fields = details.get("fields")
        if fields is None:
            fields = [{"field": field, "problem": message}] if field else []
        details["fields"] = list(fields)
        super().__init__(message, details=details, **kw)


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, **kw) -> None:
        kw.setdefault("details", {"retry_after": retry_after})
        kw.setdefault("headers", {"Retry-After": str(max(1, int(retry_after)))})
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"
