"""Throttling of sign-in, sign-up and password flows, per client IP and per account.

Counts every attempt in a fixed window (Redis when configured, in-process otherwise, see
:mod:`kloyst.ratelimit`). Over the limit → 429 with ``Retry-After``. A successful sign-in
clears its account's count, so the per-account limit only ever stops repeated failures.

Two details decide whether the limits can be dodged:

- the client is ``REMOTE_ADDR``, never ``X-Forwarded-For``: the header is whatever the
  client wrote, so trusting it would give an attacker a fresh IP bucket per request. Behind
  a proxy, the server (waitress ``trusted_proxy``) rewrites ``REMOTE_ADDR`` from the header
  it can vouch for;
- the per-account key is the *normalised* email (as sign-in looks it up), hashed so the
  limiter's keys reveal no addresses: ``Victim@x.com`` and ``victim@x.com`` share one bucket.
"""

from __future__ import annotations

import hashlib

from kloyst.accounts.models import normalize_email
from kloyst.config import parse_rate
from kloyst.errors import TooManyRequests


def _check(request, key: str, rate: str, what: str) -> None:
    limit, window = parse_rate(rate)
    decision = request.registry["kloyst.rate_limiter"].hit(key, limit, window)
    if not decision.allowed:
        raise TooManyRequests(f"too many {what}; try again in {decision.retry_after_seconds} seconds",
                              retry_after=decision.retry_after_seconds)


def client_ip(request) -> str:
    """The address the connection came from, as the WSGI server established it."""
    return request.remote_addr or "unknown"


def account_key(email: str) -> str:
    return hashlib.sha256(normalize_email(email).encode("utf-8")).hexdigest()[:32]


def throttle_ip(request, action: str) -> None:
    _check(request, f"auth:{action}:ip:{client_ip(request)}",
           request.registry.settings["kloyst.throttle.login_per_ip"], "attempts from your address")


def _account_bucket(action: str, email: str) -> str:
    return f"auth:{action}:acct:{account_key(email)}"


def throttle_account(request, action: str, email: str) -> None:
    _check(request, _account_bucket(action, email),
           request.registry.settings["kloyst.throttle.login_per_account"], "attempts for this account")


def forgive_account(request, action: str, email: str) -> None:
    """After a success, the account's attempts start over (the per-IP limit still counts)."""
    request.registry["kloyst.rate_limiter"].reset(_account_bucket(action, email))
