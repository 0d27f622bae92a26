"""Brute-force throttling of sign-in, sign-up and password flows: per client address and per account.

The limits are read from the running app's settings (``kloyst.throttle.*``), so these tests
follow whatever the suite configures. Counters live in the test Redis, emptied per test.
"""

from __future__ import annotations

import configparser
import itertools
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kloyst.config import parse_rate
from kloyst.ratelimit import RedisRateLimiter
from kloyst.runner import Stopper, start_http
from kloyst.serving import serve_in_background
from kloyst.testing import TEST_PASSWORD

STAGING_INI = Path(__file__).resolve().parents[2] / "staging.ini"

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


@pytest.fixture
def ceiling(registry) -> tuple[int, int]:
    return parse_rate(registry.settings["kloyst.throttle.login_account_ceiling"])


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


def test_one_address_guessing_at_an_account_is_stopped_even_with_the_right_password(testapp, owner, per_account):
    limit, window = per_account
    ip = new_ip()
    for _ in range(limit):
        login(testapp, owner.user.email, "wrong password", ip, 401)
    # The right password from that address is refused now too: the limit is no oracle.
    assert_throttled(login(testapp, owner.user.email, TEST_PASSWORD, ip, 429), window)


def test_many_addresses_failing_at_an_account_do_not_lock_the_owner_out(testapp, owner, per_account, ceiling):
    """OWASP: lock-out must not be a weapon. Every attacking address uses up its own allowance (the old
    hard per-account lock refused the owner after five failures from anywhere, for five minutes)."""
    limit, _ = per_account
    attackers = [new_ip() for _ in range(max(2, (ceiling[0] - 1) // limit))]
    for ip in attackers:
        for _ in range(limit):
            login(testapp, owner.user.email, "wrong password", ip, 401)
        login(testapp, owner.user.email, "wrong password", ip, 429)
    login(testapp, owner.user.email, TEST_PASSWORD, new_ip(), 200)


def test_an_attack_over_the_accounts_ceiling_holds_everyone_back_only_for_the_short_window(
        testapp, owner, per_account, ceiling):
    limit, window = ceiling
    for _ in range(limit):
        login(testapp, owner.user.email, "wrong password", new_ip(), 401)
    assert_throttled(login(testapp, owner.user.email, TEST_PASSWORD, new_ip(), 429), window)
    assert window <= 60 < per_account[1]


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
    ip = new_ip()
    for n in range(limit):
        login(testapp, f"{spellings[n % len(spellings)]}@{domain.upper()}", "wrong password", ip, 401)
    assert_throttled(login(testapp, f"{local.upper()}@{domain}", "wrong password", ip, 429), window)


def test_one_account_being_throttled_leaves_other_accounts_alone(testapp, accounts, db, owner, per_account):
    colleague = accounts.user(owner.vendor)
    db.commit()
    limit, _ = per_account
    ip = new_ip()
    for _ in range(limit + 1):
        login(testapp, owner.user.email, "wrong password", ip, "*")
    login(testapp, colleague.user.email, TEST_PASSWORD, ip, 200)


def test_unknown_accounts_are_throttled_like_real_ones(testapp, per_account):
    """Otherwise the 429 itself would tell which addresses have accounts."""
    limit, window = per_account
    ip = new_ip()
    for _ in range(limit):
        login(testapp, "nobody-at-all@example.com", "wrong password", ip, 401)
    assert_throttled(login(testapp, "nobody-at-all@example.com", "wrong password", ip, 429), window)


def test_signup_is_throttled_per_address(testapp, per_ip):
    limit, window = per_ip
    ip = new_ip()

    def signup(n: int, status: int):
        return testapp.post_json("/v1/auth/signup", {"vendor_name": f"Spam {n}", "name": "Bot",
                                                      "email": f"bot-{n}@example.com", "password": TEST_PASSWORD},
                                 status=status, extra_environ={"REMOTE_ADDR": ip})

    for n in range(limit):
        signup(n, 202)
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


def _login_over_http(port: int, n: int) -> int:
    """A failed sign-in at a different account each time, claiming a different client address each time."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/auth/login", method="POST",
        data=json.dumps({"email": f"guess-{n}@example.com", "password": "wrong password"}).encode(),
        headers={"Content-Type": "application/json", "X-Forwarded-For": f"203.0.113.{n}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code


def test_x_forwarded_for_from_a_peer_that_is_not_the_trusted_proxy_is_ignored(wsgi_app, per_ip):
    """The server believes the header only from ``trusted_proxy``; from anyone else every request is the peer's."""
    limit, _ = per_ip
    server = start_http(wsgi_app, "127.0.0.1", 0, Stopper(), threads=1, trusted_proxy="192.0.2.254")
    stop = serve_in_background(server)
    try:
        answers = [_login_over_http(server.effective_port, n) for n in range(limit + 1)]
    finally:
        stop()
    assert answers == [401] * limit + [429]


def test_staging_trusts_forwarded_headers_from_one_address_only():
    """``*`` let any client that reached Kloyst directly choose its own address (and a fresh login limit)."""
    staging = configparser.ConfigParser(interpolation=None)
    staging.read(STAGING_INI)
    trusted = staging["app:main"]["kloyst.http.trusted_proxy"].strip()
    assert trusted and "*" not in trusted and "," not in trusted and " " not in trusted


def test_invitations_to_one_address_are_throttled_whoever_sends_them(testapp, accounts, db, per_account):
    """Each invitation mails the address (a taken one too), so one address cannot be flooded from many vendors."""
    limit, window = per_account
    inviters = [accounts.vendor(f"Inviter {n}") for n in range(limit + 1)]
    db.commit()
    for inviter in inviters[:limit]:
        testapp.post_json("/v1/vendor/users", {"email": "popular@example.com"}, headers=inviter.headers, status=202)
    refused = testapp.post_json("/v1/vendor/users", {"email": "popular@example.com"}, headers=inviters[-1].headers,
                                status=429)
    assert_throttled(refused, window)
