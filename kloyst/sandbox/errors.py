"""Meta's Graph error envelope, with the HTTP status and title Meta uses for each code the sandbox returns."""

from __future__ import annotations

import secrets

# code → (HTTP status, title). Titles follow Meta's error-code table; the HTTP statuses follow
# what Meta answers (most business errors are 400; throughput is 429; outages 5xx).
CODES: dict[int, tuple[int, str]] = {
    1: (400, "API Unknown"),
    2: (503, "API Service"),
    4: (400, "Application request limit reached"),
    100: (400, "Invalid parameter"),
    190: (401, "Invalid OAuth access token - Cannot parse access token"),
    368: (400, "Temporarily blocked for policies violations"),
    80007: (400, "Rate limit issues"),
    130429: (429, "Rate limit hit"),
    131000: (500, "Something went wrong"),
    131005: (403, "Access denied"),
    131008: (400, "Required parameter is missing"),
    131009: (400, "Parameter value is not valid"),
    131016: (503, "Service unavailable"),
    131026: (400, "Message undeliverable"),
    131031: (400, "Business Account locked"),
    131047: (400, "Re-engagement message"),
    131048: (400, "Spam rate limit hit"),
    131049: (400, "This message was not delivered to maintain healthy ecosystem engagement."),
    131050: (400, "User has stopped marketing messages"),
    131053: (400, "Media upload error"),
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit"),
    131057: (503, "Account in maintenance mode"),
    131062: (400, "Business-scoped User ID (BSUID) recipients are not supported for this message"),
    132000: (400, "Number of parameters does not match the expected number of params"),
    132001: (404, "Template name does not exist in the translation"),
    132012: (400, "Parameter format does not match format in the created template"),
    132015: (400, "Template is Paused"),
    132016: (400, "Template is Disabled"),
}

TRANSIENT = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056, 131057})


def title(code: int) -> str:
    return CODES.get(code, (400, "Error"))[1]


def error_response(code: int, details: str = "", *, subcode: int | None = None,
                   message: str | None = None) -> tuple[int, dict]:
    """``(http_status, body)`` in Meta's synchronous envelope (GraphAPIError); ``message`` replaces the title."""
    status, text = CODES.get(code, (400, "Error"))
    error: dict = {
        "message": f"(#{code}) {message or text}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or text},
        "fbtrace_id": "A" + secrets.token_urlsafe(16),
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if code in TRANSIENT:
        error["is_transient"] = True
    return status, {"error": error}


def webhook_error(code: int, details: str = "") -> dict:
    """An error object as it appears in a ``failed`` status webhook (no type or fbtrace_id)."""
    text = title(code)
    return {"code": code, "title": text, "message": text, "error_data": {"details": details or text},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}
