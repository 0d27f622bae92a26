"""The ``Idempotency-Key`` request header, read the same way by every route that accepts one.

Stripe's rules: a client names a request with a key so that retrying it never
does the work twice; a key is 1 to 255 printable ASCII characters (a UUID is a good choice).
A malformed key is a 422, never silently ignored: ignoring it would turn a safe retry into a
second send or a second payment.
"""

from __future__ import annotations

import re

from kloyst.errors import Unprocessable

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


def idempotency_key(headers, *, required: bool = False, max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH) -> str | None:
    """The header's key; None when absent and not ``required``; a 422 naming the header otherwise."""
    if IDEMPOTENCY_HEADER not in headers and not required:
        return None
    key = headers.get(IDEMPOTENCY_HEADER, "").strip()
    if key and len(key) <= max_length and _PRINTABLE.fullmatch(key):
        return key
    problem = "required" if not key else f"1 to {max_length} printable ASCII characters"
    what = "is required" if not key else f"must be {problem}"
    raise Unprocessable(f"the {IDEMPOTENCY_HEADER} header {what}: send a new random key (a UUID) per request, and "
                        "the same key when retrying it", code="invalid_idempotency_key",
                        details={"fields": [{"field": IDEMPOTENCY_HEADER, "problem": problem}]})
