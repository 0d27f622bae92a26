"""Brute-force throttling of sign-in, sign-up and password flows: per client address and per account.

The limits are read from the running app's settings (``kloyst.throttle.*``), so these tests
follow whatever the suite configures. Counters live in the test Redis, emptied per test.
"""

from __future__ import annotations

import itertools

import pytest

from kloyst.config import parse_rate
from kloyst.ratelimit import RedisRateLimiter
from kloyst.testing import TEST_PASSWORD

_addresses = (f"198.51.100.{n}" for n in itertools.cycle(range(1, 255)))


def new_ip() -> str:
    return next(_addresses)


@pytest.fixture
def limiter(registry):
    """The app's own Redis limiter (this worker's Redis database is emptied before each test)."""
    assert isinstance(registry["kloyst.rate_limiter"], RedisRateLimiter)  # what the app really uses
    return registry["kloyst.redis"], "kloyst:rl:"


@pytest.fixture
def per_ip(registry) -> tuple[int, int]:
    return parse_rate(registry.settings["kloyst.throttle.login_per_ip"])


@pytest.fixture
def per_account(registry) -> tuple[int, int]:
    return parse_rate(registry.settings["kloyst.throttle.login_per_account"])


def login(testapp, email: str, password: str, ip: str, status, **headers):
    return testapp.post_json("/v1/auth/login", {"email": email, "password": password}, status=status,
                             extra_environ={"REMOTE_ADDR": ip}, headers=headers)


def assert_throttled(response, window: int) -> None:
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window
    error = response.json["error"]
    assert error["code"] == "too_many_requests"
    assert error["message"]
    assert error["details"] == {"retry_after": retry_after}


def test_login_is_throttled_per_address_after_the_configured_limit(testapp, per_ip):
    limit, window = per_ip
    ip = new_ip()
    for n in range(limit):  # a different account each time, so only the address limit can trip
        login(testapp, f"guess-{n}@example.com", "wrong password", ip, 401)
    assert_throttled(login(testapp, "guess-last@example.com", "wrong password", ip, 429), window)
    # Other clients are not affected.
    login(testapp, "guess-other@example.com", "wrong password", new_ip(), 401)


def test_a_forged_x_forwarded_for_does_not_buy_a_fresh_address(testapp, per_ip):
    limit, window = per_ip
    ip = new_ip()
    for n in range(limit):
        login(testapp, f"guess-{n}@example.com", "wrong password", ip, 401, **{"X-Forwarded-For": f"10.0.0.{n}"})
    response = login(testapp, "guess-last@example.com", "wrong password", ip, 429,
                     **{"X-Forwarded-For": "10.9.9.9"})
    assert_throttled(response, window)


def test_login_is_throttled_per_account_across_addresses(testapp, owner, per_account):
    limit, window = per_account
    for _ in range(limit):
        login(testapp, owner.user.email, "wrong password", new_ip(), 401)
    # Even the right password from a fresh address is refused now: the limit is no oracle.
    assert_throttled(login(testapp, owner.user.email, TEST_PASSWORD, new_ip(), 429), window)


def test_successful_sign_ins_do_not_use_up_the_accounts_allowance(testapp, owner, per_account):
    limit, _ = per_account
    for _ in range(limit + 2):  # more devices than the limit, each signing in correctly
        login(testapp, owner.user.email, TEST_PASSWORD, new_ip(), 200)
    for _ in range(limit - 1):  # and a few typos after them are still allowed
        login(testapp, owner.user.email, "wrong password", new_ip(), 401)
    login(testapp, owner.user.email, TEST_PASSWORD, new_ip(), 200)


def test_the_per_account_limit_ignores_the_case_of_the_address(testapp, owner, per_account):
    limit, window = per_account
    local, domain = owner.user.email.split("@")
    spellings = [local.upper(), local.capitalize(), local.swapcase(), local.title(), f" {local}"]
    for n in range(limit):
        login(testapp, f"{spellings[n % len(spellings)]}@{domain.upper()}", "wrong password", new_ip(), 401)
    assert_throttled(login(testapp, f"{local.upper()}@{domain}", "wrong password", new_ip(), 429), window)


def test_one_account_being_throttled_leaves_other_accounts_alone(testapp, accounts, db, owner, per_account):
    colleague = accounts.user(owner.vendor)
    db.commit()
    limit, _ = per_account
    for _ in range(limit + 1):
        login(testapp, owner.user.email, "wrong password", new_ip(), "*")
    login(testapp, colleague.user.email, TEST_PASSWORD, new_ip(), 200)


def test_unknown_accounts_are_throttled_like_real_ones(testapp, per_account):
    """Otherwise the 429 itself would tell which addresses have accounts."""
    limit, window = per_account
    for _ in range(limit):
        login(testapp, "nobody-at-all@example.com", "wrong password", new_ip(), 401)
    assert_throttled(login(testapp, "nobody-at-all@example.com", "wrong password", new_ip(), 429), window)


def test_signup_is_throttled_per_address(testapp, per_ip):
    limit, window = per_ip
    ip = new_ip()

    def signup(n: int, status: int):
        return testapp.post_json("/v1/auth/signup", {"vendor_name": f"Spam {n}", "name": "Bot",
                                                      "email": f"bot-{n}@example.com", "password": TEST_PASSWORD},
                                 status=status, extra_environ={"REMOTE_ADDR": ip})

    for n in range(limit):
        signup(n, 201)
    assert_throttled(signup(limit, 429), window)


def test_signup_is_throttled_per_account_across_addresses(testapp, per_account):
    limit, window = per_account
    body = {"vendor_name": "Acme", "name": "Ann", "email": "taken-or-not@example.com", "password": TEST_PASSWORD}
    for _ in range(limit):
        testapp.post_json("/v1/auth/signup", body, extra_environ={"REMOTE_ADDR": new_ip()}, expect_errors=True)
    refused = testapp.post_json("/v1/auth/signup", body, extra_environ={"REMOTE_ADDR": new_ip()}, status=429)
    assert_throttled(refused, window)


def test_password_reset_requests_are_throttled_per_account(testapp, owner, per_account):
    limit, window = per_account
    for _ in range(limit):
        testapp.post_json("/v1/auth/password/forgot", {"email": owner.user.email}, status=202,
                          extra_environ={"REMOTE_ADDR": new_ip()})
    response = testapp.post_json("/v1/auth/password/forgot", {"email": owner.user.email}, status=429,
                                 extra_environ={"REMOTE_ADDR": new_ip()})
    assert_throttled(response, window)


def test_counters_are_kept_in_redis_under_hashed_account_keys(testapp, owner, limiter):
    """Shared by every process; the keys name no email address."""
    client, prefix = limiter
    login(testapp, owner.user.email, "wrong password", new_ip(), 401)
    keys = [key.decode() for key in client.scan_iter(match=prefix + "*")]
    assert any(key.startswith(prefix + "auth:login:acct:") for key in keys)
    assert not any(owner.user.email.split("@")[0] in key for key in keys)
