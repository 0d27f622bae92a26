"""Meta's Graph API errors, parsed once and classified once, so every caller decides the same way.

Why a table: the outbox must know, for each failed call, whether to retry soon (transient), retry after
slowing down (rate limited), or fail now and dead-letter (permanent, or an auth problem the tenant must fix).
Meta says to key that logic on ``error.code`` (plus ``error_data.details``), never on titles or messages, and
that the HTTP status is not a reliable discriminator (most business errors arrive as 400). Every code listed in
``docs/meta/error-codes.md`` has a row here; ``tests/unit/test_meta_errors.py`` parses that table and fails when
a documented code has none. A code Meta adds later falls back to the HTTP status (5xx → transient, 429 → rate
limited, other 4xx → permanent) and the reason says it was not in the table.

A network failure (refused connection, timeout, reset, garbage instead of HTTP) becomes a ``MetaError`` too,
of kind TRANSIENT with ``type == "network"``, so callers handle one exception type. ``maybe_accepted`` tells
the outbox whether Meta might have accepted a send despite the error (the request left but no answer came).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any


class ErrorKind(str, Enum):
    TRANSIENT = "transient"  # retry with exponential backoff and jitter
    RATE_LIMITED = "rate_limited"  # retry after slowing down (the sender's pace, not just this message)
    PERMANENT = "permanent"  # fail now and dead-letter; resending the same request cannot succeed
    AUTH = "auth"  # the token or its permissions: fail now and tell the tenant to fix credentials

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED)


@dataclass(frozen=True)
class Classification:
    kind: ErrorKind
    reason: str
    documented: bool = True  # False: not in Meta's table, decided by the HTTP status
    min_delay_seconds: float = 0.0  # the shortest wait that makes sense before trying again


T, R, P, A = ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED, ErrorKind.PERMANENT, ErrorKind.AUTH

# code → (kind, reason, minimum delay before a retry). Source: docs/meta/error-codes.md and its retry advice.
CODES: dict[int, tuple[ErrorKind, str, float]] = {
    0: (A, "cannot authenticate the app user; re-authenticate", 0),
    1: (T, "unknown API error (invalid request or server error); retry a few times, then fail", 0),
    2: (T, "API service temporarily down or overloaded", 0),
    3: (A, "the app lacks the capability or permission for this method", 0),
    4: (R, "app-level rate limit (too many calls); back off, see x-app-usage", 60),
    10: (A, "permission denied", 0),
    17: (R, "user request limit reached; back off", 60),
    33: (P, "parameter value not valid (e.g. the phone number was deleted)", 0),
    100: (P, "invalid parameter; the request must be fixed", 0),
    190: (A, "access token expired or invalid; replace the token, then resend", 0),
    368: (P, "temporarily blocked for policy violations; pause the tenant", 0),
    80007: (R, "WABA rate limit reached; back off, see x-business-use-case-usage", 60),
    130429: (R, "Cloud API throughput reached for this phone number; pace the number down", 1),
    130472: (P, "the recipient's number is part of a Meta experiment", 0),
    130497: (P, "the WABA may not message users in that country", 0),
    131000: (T, "something went wrong at Meta; retry a limited number of times", 0),
    131005: (A, "access denied (permission missing or revoked)", 0),
    131008: (P, "a required parameter is missing", 0),
    131009: (P, "a parameter value is invalid", 0),
    131016: (T, "service unavailable", 0),
    131021: (P, "recipient cannot be the sender", 0),
    131026: (P, "message undeliverable (not a WhatsApp user, terms not accepted, or an old client)", 0),
    131030: (P, "recipient is not in the allowed list of this test number", 0),
    131031: (P, "business account locked (policy, or wrong two-step PIN); pause the tenant", 0),
    131037: (P, "the display name is not approved", 0),
    131042: (P, "business eligibility or payment problem; fix billing", 0),
    131045: (P, "incorrect certificate for the phone number", 0),
    131047: (P, "more than 24 hours since the user last replied; send a template instead", 0),
    131048: (R, "spam rate limit (quality-based restriction); slow down for a long period", 3600),
    131049: (P, "held back to keep ecosystem engagement healthy (per-user marketing limit); do not retry now", 0),
    131050: (P, "the user stopped marketing messages", 0),
    131051: (P, "unsupported message type", 0),
    131052: (P, "media download failed; fix the media URL or type", 0),
    131053: (P, "media upload failed; fix the media URL or type", 0),
    131056: (R, "pair rate limit: too many messages to this recipient; other recipients are unaffected", 6),
    131057: (T, "business account in maintenance mode; retry later", 60),
    131062: (P, "BSUID recipients are not supported", 0),
    131063: (P, "marketing templates are disabled for the Cloud API", 0),
    131064: (P, "messaging limit hit because of template-classification violations", 0),
    132000: (P, "template parameter count does not match", 0),
    132001: (P, "template does not exist in that language or is not approved", 0),
    132005: (P, "template text too long once hydrated", 0),
    132007: (P, "template content violates policy", 0),
    132008: (P, "template parameter value invalid", 0),
    132012: (P, "template parameter format mismatch", 0),
    132015: (P, "template paused for low quality; not until unpaused", 0),
    132016: (P, "template disabled", 0),
    132068: (P, "flow blocked", 0),
    132069: (R, "flow throttled; retry later", 60),
    133016: (R, "register/deregister attempts rate limit; retry later", 60),
    135000: (P, "generic user error", 0),
    137000: (P, "recipient identity key mismatch", 0),
}

# Families Meta documents as ranges: (first, last, kind, reason).
RANGES: tuple[tuple[int, int, ErrorKind, str], ...] = (
    (200, 299, A, "API permission not granted or revoked"),
    (132000, 132999, P, "template error; pause that template"),
    (138000, 138999, P, "calling error"),
    (139000, 139004, P, "flow error"),
    (139100, 139103, P, "block-user error"),
)


def classify(code: int | None, http_status: int | None = None, is_transient: bool = False) -> Classification:
    """Decide what to do about an error: by Meta's code when it is known, else by the HTTP status."""
    if code is not None:
        if code in CODES:
            kind, reason, delay = CODES[code]
            return _trust_transient_flag(Classification(kind, reason, True, delay), is_transient)
        for first, last, kind, reason in RANGES:
            if first <= code <= last:
                return _trust_transient_flag(Classification(kind, reason), is_transient)
    where = f"code {code}" if code is not None else "no Meta error code"
    if is_transient:
        return Classification(T, f"{where}, not in Kloyst's table; Meta marked it transient", False)
    if http_status == 429:
        return Classification(R, f"{where}, not in Kloyst's table; HTTP 429 means slow down", False, 1)
    if http_status is None or http_status >= 500:
        status = f"HTTP {http_status}" if http_status else "no HTTP answer"
        return Classification(T, f"{where}, not in Kloyst's table; {status} is treated as transient", False)
    return Classification(P, f"{where}, not in Kloyst's table; HTTP {http_status} is treated as permanent", False)


def _trust_transient_flag(found: Classification, is_transient: bool) -> Classification:
    # Meta's own is_transient flag wins over a table row that says "fail": Meta knows this instance.
    if is_transient and not found.kind.retryable:
        return Classification(T, found.reason + " (Meta marked this one transient)", found.documented)
    return found


def _as_int(value: Any) -> int | None:
    # Meta's payloads sometimes carry codes as strings ("131056").
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class MetaError(Exception):
    """A failed Graph API call: Meta's error envelope, or a network failure in the same shape."""

    NETWORK = "network"

    def __init__(self, message: str, *, http_status: int | None = None, code: int | None = None,
                 subcode: int | None = None, type: str | None = None, details: str | None = None,
                 fbtrace_id: str | None = None, is_transient: bool = False, user_title: str | None = None,
                 user_message: str | None = None, maybe_accepted: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.subcode = subcode
        self.type = type
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.is_transient = is_transient
        self.user_title = user_title
        self.user_message = user_message
        self.maybe_accepted = maybe_accepted
        self.classification = classify(code, http_status, is_transient)

    @property
    def kind(self) -> ErrorKind:
        return self.classification.kind

    @property
    def reason(self) -> str:
        return self.classification.reason

    @property
    def retryable(self) -> bool:
        return self.kind.retryable

    @property
    def is_network(self) -> bool:
        return self.type == self.NETWORK

    def __str__(self) -> str:
        parts = [f"HTTP {self.http_status}" if self.http_status else "no HTTP answer"]
        if self.code is not None:
            parts.append(f"code {self.code}" + (f"/{self.subcode}" if self.subcode is not None else ""))
        parts.append(self.message)
        if self.details:
            parts.append(self.details)
        if self.fbtrace_id:
            parts.append(f"fbtrace_id {self.fbtrace_id}")
        return " · ".join(parts) + f" [{self.kind.value}: {self.reason}]"

    @classmethod
    def network(cls, exc: BaseException, *, maybe_accepted: bool) -> MetaError:
        return cls(f"network error: {type(exc).__name__}: {exc}", type=cls.NETWORK, maybe_accepted=maybe_accepted)

    @classmethod
    def from_response(cls, http_status: int, body: bytes, fbtrace_id: str | None = None) -> MetaError:
        """Parse Meta's envelope; anything else (HTML from a proxy, empty, truncated) still yields an error."""
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(error, dict):
            snippet = body[:200].decode("utf-8", "replace").strip() if body else "(empty body)"
            return cls(f"no Meta error envelope: {snippet}", http_status=http_status, fbtrace_id=fbtrace_id)
        error_data = error.get("error_data")
        # error_data is an object with details on messaging calls, a plain string on template calls.
        details = error_data.get("details") if isinstance(error_data, dict) else error_data
        return cls(
            str(error.get("message") or "(no message)"),
            http_status=http_status,
            code=_as_int(error.get("code")),
            subcode=_as_int(error.get("error_subcode")),
            type=error.get("type"),
            details=str(details) if details not in (None, "") else None,
            fbtrace_id=error.get("fbtrace_id") or fbtrace_id,
            is_transient=error.get("is_transient") is True,
            user_title=error.get("error_user_title"),
            user_message=error.get("error_user_msg"),
        )
