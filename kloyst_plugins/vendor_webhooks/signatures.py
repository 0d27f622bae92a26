"""Signing a delivery, and checking one: Stripe's scheme, so receivers already know it.

``Kloyst-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``. The
timestamp is signed with the body, so a captured request replayed later fails the receiver's
tolerance check (:func:`verify_signature`, 5 minutes by default) and cannot be re-dated
without the secret. After a secret rotation the header carries one ``v1=`` per secret still
valid, and a receiver holding either accepts it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

HEADER = "Kloyst-Signature"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, too old, or matches no signature of the body."""


def new_secret() -> str:
    """A fresh endpoint secret: 32 random bytes, URL-safe text."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secrets_: Iterable[str], body: bytes, timestamp: int | None = None) -> str:
    """The ``Kloyst-Signature`` header value for ``body``, one ``v1=`` per secret."""
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    return ",".join([f"t={stamp}", *(f"v1={_digest(s, stamp, body)}" for s in secrets_)])


def verify_signature(secret: str, header: str | None, body: bytes,
                     tolerance: float = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> int:
    """Check a delivery as a receiver should; return its signed timestamp, or raise :class:`SignatureError`.

    ``body`` is the raw request body, exactly as received (not parsed and dumped again).
    A timestamp more than ``tolerance`` seconds from ``now`` (either way) is refused: that is
    what stops a replayed request. Compare in constant time.
    """
    if not header:
        raise SignatureError(f"no {HEADER} header")
    stamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                stamp = int(value)
            except ValueError:
                raise SignatureError(f"{HEADER}: t is not a unix timestamp") from None
        elif key == "v1":
            candidates.append(value)
    if stamp is None or not candidates:
        raise SignatureError(f"{HEADER} must carry t= and at least one v1=")
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        raise SignatureError(f"{HEADER} timestamp is {abs(current - stamp):.0f} s away from now (tolerance "
                             f"{tolerance:.0f} s): a replayed or delayed request")
    expected = _digest(secret, stamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError(f"{HEADER} matches no signature of this body with this secret")
    return stamp
