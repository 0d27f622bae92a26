"""The general rate limit (kloyst.http.quotas) on the PostgreSQL + Redis application: per user and per vendor for
signed-in callers, per client address for the others, weighted by each route's declared ``rate_cost``, and a 429
``rate_limited`` with ``Retry-After`` and ``RateLimit-*`` headers when over.

The suite's settings make the limits too high to trip; each test lowers the one it is about.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationExecutionError

from kloyst.config import Rate
from kloyst.http.quotas import rate_limit_deriver
from kloyst.ratelimit import RedisRateLimiter
from kloyst.testing import AccountFactory


@pytest.fixture
def limits(registry, monkeypatch):
    """``limits(per_user=(3, 3600), ...)`` lowers the named limits for this test."""

    def lower(**rates: tuple[int, int]) -> None:
        for name, (count, seconds) in rates.items():
            monkeypatch.setitem(registry.settings, f"kloyst.ratelimit.{name}", Rate(count, seconds))

    return lower


def test_the_application_limits_through_redis(registry):
    assert isinstance(registry["kloyst.rate_limiter"], RedisRateLimiter)


def test_a_user_over_the_limit_gets_a_429_with_retry_after_and_ratelimit_headers(testapp, owner, limits):
    limits(per_user=(3, 3600))
    answers = [testapp.get("/v1/vendor", headers=owner.headers) for _ in range(3)]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    assert {a.headers["RateLimit-Limit"] for a in answers} == {"3"}
    refused = testapp.get("/v1/vendor", headers=owner.headers, status=429)
    error = refused.json["error"]
    assert error["code"] == "rate_limited"
    assert error["details"]["scope"] == "user" and error["details"]["limit"] == 3
    assert 1190 <= int(refused.headers["Retry-After"]) <= 1200  # one token of 3 an hour
    assert error["details"]["retry_after"] == int(refused.headers["Retry-After"])
    assert refused.headers["RateLimit-Limit"] == "3" and refused.headers["RateLimit-Remaining"] == "0"
    assert 3590 <= int(refused.headers["RateLimit-Reset"]) <= 3600
    assert "try again in" in error["message"]


def test_a_refused_request_reaches_no_view(testapp, owner, limits, db):
    limits(per_user=(1, 3600))
    testapp.patch_json("/v1/vendor", {"name": "First"}, headers=owner.headers)
    testapp.patch_json("/v1/vendor", {"name": "Second"}, headers=owner.headers, status=429)
    assert testapp.get("/v1/vendor", headers=owner.headers, status=429)
    db.expire_all()
    db.refresh(owner.vendor)
    assert owner.vendor.name == "First"


def test_users_have_their_own_buckets_and_share_their_vendors(testapp, accounts, db, limits):
    limits(per_user=(3, 3600), per_vendor=(5, 3600))
    first = accounts.vendor("Busy Co")
    colleague = accounts.user(first.vendor)
    elsewhere = accounts.vendor("Calm Co")
    db.commit()
    for _ in range(3):
        testapp.get("/v1/vendor", headers=first.headers)
    assert testapp.get("/v1/vendor", headers=first.headers, status=429).json["error"]["details"]["scope"] == "user"
    testapp.get("/v1/vendor", headers=colleague.headers)  # the colleague has a bucket of their own…
    testapp.get("/v1/vendor", headers=colleague.headers)
    over = testapp.get("/v1/vendor", headers=colleague.headers, status=429)  # …but the vendor's 5 are spent
    assert over.json["error"]["details"]["scope"] == "vendor" and over.headers["RateLimit-Limit"] == "5"
    for _ in range(3):  # another vendor is not slowed down by this one
        testapp.get("/v1/vendor", headers=elsewhere.headers)


def test_requests_without_a_valid_token_are_limited_per_client_address(testapp, limits):
    limits(per_ip=(2, 3600))
    here = {"REMOTE_ADDR": "198.51.100.7"}
    testapp.get("/v1/openapi.json", extra_environ=here)
    testapp.get("/v1/vendor", headers={"Authorization": "Bearer not-a-token"}, extra_environ=here, status=401)
    refused = testapp.get("/v1/openapi.json", extra_environ=here, status=429)
    assert refused.json["error"]["details"]["scope"] == "ip"
    testapp.get("/v1/openapi.json", extra_environ={"REMOTE_ADDR": "198.51.100.8"})  # another address


def test_health_checks_and_meta_webhooks_are_never_rate_limited(testapp, limits):
    limits(per_ip=(1, 3600))
    for _ in range(3):
        testapp.get("/healthz")
        testapp.get("/webhook/whatsapp", params={"hub.mode": "subscribe", "hub.challenge": "7",
                                                  "hub.verify_token": "test-verify-token"})


def test_an_expensive_route_takes_its_declared_cost(testapp, owner, enable_plugin, limits):
    enable_plugin(owner, "contacts")
    limits(per_user=(25, 3600))
    first = testapp.get("/v1/contacts/export", headers=owner.headers)  # rate_cost=10
    assert first.headers["RateLimit-Remaining"] == "15"
    testapp.get("/v1/contacts/export", headers=owner.headers)
    refused = testapp.get("/v1/contacts/export", headers=owner.headers, status=429)
    assert refused.json["error"]["details"]["cost"] == 10 and refused.json["error"]["details"]["remaining"] == 5
    assert "costs 10" in refused.json["error"]["message"]
    assert testapp.get("/v1/contacts", headers=owner.headers).headers["RateLimit-Remaining"] == "4"  # costs 1


@pytest.mark.parametrize("cost", [-1, 1.5, "5", True])
def test_a_rate_cost_that_is_not_a_whole_number_stops_start_up(cost):
    config = Configurator()
    config.add_view_deriver(rate_limit_deriver)
    config.add_route("r", "/r")
    config.add_view(lambda request: request.response, route_name="r", rate_cost=cost)
    with pytest.raises(ConfigurationExecutionError, match="has rate_cost=.*give a whole number"):
        config.commit()


def test_concurrent_clients_never_get_more_than_the_limit_through(wsgi_app, registry, committed_db, limits):
    """Eight clients at once, each with its own connection to the app, against one user's 20 an hour: 20 pass."""
    accounts = AccountFactory(committed_db, registry["kloyst.access_tokens"])
    owner = accounts.vendor("Crowd Co")
    committed_db.commit()
    limits(per_user=(20, 3600))
    start = threading.Barrier(8)

    def client() -> list[int]:
        app = webtest.TestApp(wsgi_app, extra_environ={"REMOTE_ADDR": "203.0.113.9"})
        start.wait()
        return [app.get("/v1/vendor", headers=owner.headers, expect_errors=True).status_int for _ in range(10)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [s for future in [pool.submit(client) for _ in range(8)] for s in future.result()]
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == 20


def test_concurrent_clients_get_at_most_the_limit_in_any_window(wsgi_app, registry, committed_db, limits):
    """Against 5 a second for 2.5 s: in every 1 s window at most 5 + 5 (the refill) pass, and the refill does."""
    accounts = AccountFactory(committed_db, registry["kloyst.access_tokens"])
    owner = accounts.vendor("Steady Co")
    committed_db.commit()
    limits(per_user=(5, 1))
    passed: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.5

    def client() -> None:
        app = webtest.TestApp(wsgi_app, extra_environ={"REMOTE_ADDR": f"203.0.113.{uuid.uuid4().int % 200 + 1}"})
        while time.monotonic() < stop:
            if app.get("/v1/vendor", headers=owner.headers, expect_errors=True).status_int == 200:
                with lock:
                    passed.append(time.monotonic())

    with ThreadPoolExecutor(max_workers=6) as pool:
        for future in [pool.submit(client) for _ in range(6)]:
            future.result()
    passed.sort()
    busiest = max(sum(1 for t in passed if begin <= t < begin + 1.0) for begin in passed)
    assert 5 <= busiest <= 11  # one of slack for the clients' clocks against Redis's
    assert 10 <= len(passed) <= 5 + 5 * 2.6
