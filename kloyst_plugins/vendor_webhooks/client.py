"""The HTTP client that calls vendors' endpoints: pooled, bounded, and unable to reach Kloyst's own network.

One urllib3 ``PoolManager`` per worker process, shared by the delivery threads (its pools are
thread-safe), keep-alive per endpoint host. urllib3 directly, not ``requests``: a delivery is
one small POST and ``requests``' per-call work (preparing, hooks, cookies, environment
merging) costs about four times urllib3's CPU, which on two cores is the difference between
~500 and over 2,000 deliveries a second (``bench/vendor_webhooks.py``). What a receiver can do
to a worker is bounded:

* **no forgery** — every new connection resolves the host, checks every address against the
  :class:`.addresses.AddressPolicy` and connects to the checked address (TLS still verifies the
  host name), so DNS rebinding after registration gains nothing; no proxy is ever used (one
  would connect where the guard never looked);
* **no redirects** — a 3xx is a failed attempt ("redirect to … not followed"), never a request
  to wherever ``Location`` points;
* **short timeouts** — connect and read (``vendor_webhooks.connect_timeout_seconds``,
  ``read_timeout_seconds``); a receiver that keeps the connection open without answering costs
  one thread for the read timeout, then the attempt fails;
* **a capped read** — at most :data:`RESPONSE_CAP` bytes of the answer are read (kept, trimmed,
  as the attempt's error for a non-2xx); a longer answer's connection is dropped rather than
  drained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NameResolutionError, NewConnectionError,
                                ProtocolError, ReadTimeoutError)

from kloyst_plugins.vendor_webhooks.addresses import AddressPolicy, resolve, UnsafeUrl

log = logging.getLogger(__name__)

RESPONSE_CAP = 4096
USER_AGENT = "Kloyst-Webhooks/1"


class RefusedAddress(NewConnectionError):
    """The host resolved to an address the policy refuses (raised while connecting)."""


class _Guarded:
    policy: AddressPolicy = AddressPolicy()

    def _new_conn(self):
        # Untyped on purpose: a mixin over urllib3's connection classes, which define _dns_host and port.
        try:
            infos = resolve(self._dns_host, self.port, self.policy)
        except UnsafeUrl as exc:
            raise RefusedAddress(self, str(exc)) from None
        host = self._dns_host
        self._dns_host = infos[0][4][0]  # connect to the address just checked; TLS still names the host
        try:
            return super()._new_conn()
        finally:
            self._dns_host = host


def pool_manager(policy: AddressPolicy, *, hosts: int = 1000, per_host: int = 16) -> urllib3.PoolManager:
    """Calls only what ``policy`` allows, keeps up to ``per_host`` connections per host, never retries."""
    http_conn = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), {"policy": policy})
    https_conn = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), {"policy": policy})
    manager = urllib3.PoolManager(num_pools=hosts, maxsize=per_host, block=False, retries=False)
    manager.pool_classes_by_scheme = {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})}
    return manager


@dataclass(frozen=True)
class Answer:
    """What one attempt came to: ``ok`` (2xx), else the status code and/or a reason a person can act on."""

    ok: bool
    status_code: int | None = None
    error: str | None = None


def post(manager: urllib3.PoolManager, url: str, body: bytes, headers: dict[str, str], *, connect_timeout: float,
         read_timeout: float) -> Answer:
    """POST ``body`` once; never raises for what the receiver or the network did."""
    try:
        response = manager.urlopen("POST", url, body=body, headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout), redirect=False, retries=False,
            preload_content=False)
    except urllib3.exceptions.MaxRetryError as exc:  # retries=False still wraps connection errors
        return _failure(exc.reason or exc, connect_timeout, read_timeout)
    except (HTTPError, OSError) as exc:
        return _failure(exc, connect_timeout, read_timeout)
    code = response.status
    try:
        raw = response.read(RESPONSE_CAP + 1, decode_content=False)
    except (HTTPError, OSError) as exc:  # the receiver broke off or stalled while sending its answer
        response.close()
        if 200 <= code < 300:
            return Answer(True, code)
        return Answer(False, code, f"HTTP {code}; answer unreadable: {_short(exc)}")
    if len(raw) <= RESPONSE_CAP:
        response.release_conn()  # read to its end: the connection goes back to the pool
    else:
        response.close()  # a longer answer is not drained: the connection is dropped
    if 200 <= code < 300:
        return Answer(True, code)
    if 300 <= code < 400:
        location = response.headers.get("Location", "")
        return Answer(False, code, f"HTTP {code}: redirect to {location[:200]!r} not followed (give the final URL)")
    text = raw[:200].decode("utf-8", "replace").strip()
    return Answer(False, code, f"HTTP {code}" + (f": {text}" if text else ""))


def _failure(exc: BaseException, connect_timeout: float, read_timeout: float) -> Answer:
    if isinstance(exc, RefusedAddress):
        # urllib3 prefixes the connection's repr ("GuardedHTTPConnection(host=…): "); the reason is after it.
        return Answer(False, error=f"refused: {str(exc).split('): ', 1)[-1]}"[:500])
    if isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):  # urllib3: a subclass
        return Answer(False, error=f"connect timeout ({connect_timeout:g} s)")
    if isinstance(exc, ReadTimeoutError):
        return Answer(False, error=f"no answer within the read timeout ({read_timeout:g} s)")
    if isinstance(exc, (NewConnectionError, NameResolutionError, ProtocolError, OSError)):
        return Answer(False, error=f"connection failed: {_short(exc)}")
    return Answer(False, error=f"request failed: {_short(exc)}")


def _short(exc: object) -> str:
    text = str(exc)
    # urllib3 repeats the pool and connection objects in its messages; keep the part that says what happened.
    for marker in ("Failed to establish a new connection:", "): "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return f"{type(exc).__name__}: {text.strip()}"[:400]
