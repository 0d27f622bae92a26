"""Throttling of sign-in, sign-up and password flows, per client IP and per account.

Counts every attempt in a fixed window (Redis when configured, in-process otherwise, see
:mod:`kloyst.ratelimit`). Over the limit → 429 with ``Retry-After``. The per-account key
is a hash of the email, so the limiter's keys reveal no addresses.
"""

from __future__ import annotations

import hashlib

from kloyst.config import parse_rate
from kloyst.errors import TooManyRequests


def _check(request, key: str, rate: str, what: str) -> None:
    limit, window = parse_rate(rate)
    decision = request.registry["kloyst.rate_limiter"].hit(key, limit, window)
    if not decision.allowed:
        raise TooManyRequests(f"too many {what}; try again in {decision.retry_after_seconds} seconds",
                              retry_after=decision.retry_after_seconds)


def throttle_ip(request, action: str) -> None:
    _check(request, f"auth:{action}:ip:{request.client_addr}",
           request.registry.settings["kloyst.throttle.login_per_ip"], "attempts from your address")


def throttle_account(request, action: str, email: str) -> None:
    digest = hashlib.sha256(email.encode("utf-8")).hexdigest()[:32]
    _check(request, f"auth:{action}:acct:{digest}",
           request.registry.settings["kloyst.throttle.login_per_account"], "attempts for this account")
