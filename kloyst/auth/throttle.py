"""Throttling of sign-in, sign-up and password flows, per client IP and per account.

Counts every attempt in a fixed window (Redis when configured, in-process otherwise, see
:mod:`kloyst.ratelimit`). Over the limit → 429 with ``Retry-After``.

Sign-in must not let an attacker lock the owner out (OWASP Authentication Cheat Sheet,
"account lockout"), so its per-account limit is two counters:

- per account *and* client (``kloyst.throttle.login_per_account``, 5 in 5 minutes): the
  guesses one address may make at one account. A client that fails five times waits; the
  owner signing in from anywhere else does not. A success clears it;
- per account from every client together (``kloyst.throttle.login_account_ceiling``), much
  higher and over a short window: it caps the guesses of an attacker with many addresses,
  and the longest it can hold the owner back is that window (a minute), while the attack
  keeps up the whole ceiling's rate. A success does not clear it.

Sign-up, verification, password-reset and invitation requests mail the address, so for them one
counter per account across every client is the point (no mail-bombing an address from many clients).

Two details decide whether the limits can be dodged:

- the client is ``REMOTE_ADDR``, never ``X-Forwarded-For``: the header is whatever the
  client wrote, so trusting it would give an attacker a fresh IP bucket per request. Behind
  a proxy, the server (waitress ``trusted_proxy``, which must name the proxy's own address,
  never ``*`` on a port others can reach) rewrites ``REMOTE_ADDR`` from the header it can
  vouch for, and only on connections from that address;
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


def _client_bucket(action: str, email: str, request) -> str:
    return f"{_account_bucket(action, email)}:ip:{client_ip(request)}"


def throttle_account(request, action: str, email: str) -> None:
    """The per-account limit of a request that mails the address: one counter, whoever asks."""
    _check(request, _account_bucket(action, email),
           request.registry.settings["kloyst.throttle.login_per_account"], "attempts for this account")


def throttle_sign_in(request, email: str) -> None:
    """Sign-in's per-account limits: this client's guesses at the account, then everyone's (see the module)."""
    settings = request.registry.settings
    _check(request, _client_bucket("login", email, request), settings["kloyst.throttle.login_per_account"],
           "failed sign-ins for this account from your address")
    _check(request, _account_bucket("login", email), settings["kloyst.throttle.login_account_ceiling"],
           "sign-ins for this account")


def forgive_sign_in(request, email: str) -> None:
    """After a success, this client's attempts at the account start over (the per-IP limit and the ceiling count on)."""
    request.registry["kloyst.rate_limiter"].reset(_client_bucket("login", email, request))
