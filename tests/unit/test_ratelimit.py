"""Both rate limiters keep the same promise: never more than N hits per key per window, even under
concurrent callers, and a refusal says how long to wait (0 < retry_after <= window).

The Redis limiter runs against the real Redis used by the test suite.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kloyst.ratelimit import Decision, MemoryRateLimiter, RedisRateLimiter, make_rate_limiter


def hammer(limiter, key: str, *, limit: int, window: float, threads: int, hits_each: int) -> list[Decision]:
    """``threads`` callers released at once, each hitting ``key`` ``hits_each`` times."""
    start = threading.Barrier(threads)

    def caller() -> list[Decision]:
        start.wait()
        return [limiter.hit(key, limit, window) for _ in range(hits_each)]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(caller) for _ in range(threads)]
        return [decision for future in futures for decision in future.result()]


def test_allows_exactly_the_limit_then_refuses(limiter):
    decisions = [limiter.hit("k", 3, 60) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.count for d in decisions] == [1, 2, 3, 4, 5]


def test_concurrent_callers_never_get_more_than_the_limit(limiter):
    decisions = hammer(limiter, "shared", limit=50, window=60, threads=16, hits_each=10)
    assert len(decisions) == 160
    assert sum(d.allowed for d in decisions) == 50
    assert sorted(d.count for d in decisions) == list(range(1, 161))  # every hit counted exactly once


def test_refusal_says_how_long_to_wait_within_the_window(limiter):
    window = 60
    limiter.hit("k", 1, window)
    refused = limiter.hit("k", 1, window)
    assert not refused.allowed
    assert 0 < refused.retry_after <= window
    assert 1 <= refused.retry_after_seconds <= window


def test_keys_are_counted_separately(limiter):
    assert limiter.hit("a", 1, 60).allowed
    assert not limiter.hit("a", 1, 60).allowed
    assert limiter.hit("b", 1, 60).allowed


def test_reset_forgets_a_key(limiter):
    limiter.hit("k", 1, 60)
    assert not limiter.hit("k", 1, 60).allowed
    limiter.reset("k")
    assert limiter.hit("k", 1, 60).allowed


def test_memory_window_resets_after_it_ends(clock):
    limiter = MemoryRateLimiter(clock=clock)
    assert limiter.hit("k", 2, 10).allowed
    clock.advance(4)
    assert limiter.hit("k", 2, 10).allowed
    refused = limiter.hit("k", 2, 10)
    assert not refused.allowed and refused.retry_after == pytest.approx(6)
    clock.advance(6)
    fresh = limiter.hit("k", 2, 10)
    assert fresh.allowed and fresh.count == 1


def test_memory_sweep_never_forgets_a_longer_window_that_is_still_running(clock):
    limiter = MemoryRateLimiter(clock=clock)
    limiter.SWEEP_AT = limiter._sweep_at = 10
    for _ in range(6):
        limiter.hit("acct:victim", 5, 300)
    for n in range(10):
        limiter.hit(f"ip:old:{n}", 20, 60)
    clock.advance(61)  # the 60 s windows are over, the 300 s one is not
    for n in range(30):  # enough new keys to force a sweep
        limiter.hit(f"ip:new:{n}", 20, 60)
    assert not any(key.startswith("ip:old:") for key in limiter._windows)  # a sweep ran
    assert not limiter.hit("acct:victim", 5, 300).allowed


def test_memory_sweep_drops_windows_that_are_over(clock):
    limiter = MemoryRateLimiter(clock=clock)
    limiter.SWEEP_AT = limiter._sweep_at = 10
    for n in range(11):
        limiter.hit(f"old:{n}", 1, 5)
    clock.advance(6)
    for n in range(30):
        limiter.hit(f"new:{n}", 1, 5)
    assert not any(key.startswith("old:") for key in limiter._windows)
    assert len(limiter._windows) <= 30


def test_redis_window_resets_after_it_ends(redis_limiter):
    window = 0.3
    assert redis_limiter.hit("k", 1, window).allowed
    refused = redis_limiter.hit("k", 1, window)
    assert not refused.allowed and 0 < refused.retry_after <= window
    time.sleep(refused.retry_after + 0.05)
    fresh = redis_limiter.hit("k", 1, window)
    assert fresh.allowed and fresh.count == 1


def test_redis_counts_are_shared_between_limiter_instances(redis_client, redis_limiter):
    """Two processes are two limiter objects on one Redis: they share one budget."""
    prefix = redis_limiter._prefix
    other = RedisRateLimiter(redis_client, prefix=prefix)
    assert redis_limiter.hit("k", 2, 60).allowed
    assert other.hit("k", 2, 60).allowed
    assert not redis_limiter.hit("k", 2, 60).allowed


def test_redis_key_always_gets_an_expiry(redis_client, redis_limiter):
    redis_limiter.hit("k", 5, 60)
    ttl = redis_client.pttl(redis_limiter._prefix + "k")
    assert 0 < ttl <= 60_000


def test_make_rate_limiter_uses_redis_when_there_is_a_client(redis_client):
    assert isinstance(make_rate_limiter(redis_client), RedisRateLimiter)
    assert isinstance(make_rate_limiter(None), MemoryRateLimiter)


def test_retry_after_seconds_is_a_whole_number_of_at_least_one():
    assert Decision(False, 2, 1, 0.2).retry_after_seconds == 1
    assert Decision(False, 2, 1, 4.1).retry_after_seconds == 5
