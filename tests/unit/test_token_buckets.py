"""Token buckets (``take``), the general rate limit's store, keep one promise in both stores: over any interval
of length T a bucket lets through at most ``capacity + capacity·T/period``, even under concurrent callers; a
request takes its cost from every bucket it is charged to, or from none.

The Redis store runs against the real Redis of the test suite.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor


from kloyst.ratelimit import Bucket, MemoryRateLimiter, RedisRateLimiter


def test_a_full_bucket_lets_its_capacity_through_then_refuses(limiter):
    bucket = Bucket("k", 3, 3600)
    quotas = [limiter.take([bucket]) for _ in range(5)]
    assert [q.allowed for q in quotas] == [True, True, True, False, False]
    assert [q.remaining for q in quotas] == [2, 1, 0, 0, 0]
    assert all(q.limit == 3 and q.period == 3600 for q in quotas)


def test_a_refusal_says_when_the_cost_is_back(limiter):
    bucket = Bucket("k", 10, 60)  # one token every 6 s
    for _ in range(10):
        assert limiter.take([bucket]).allowed
    refused = limiter.take([bucket], cost=3)
    assert not refused.allowed
    assert 17 < refused.retry_after <= 18  # three tokens at 6 s each, a moment of which has passed
    assert 59 < refused.reset <= 60 and refused.reset_seconds == 60


def test_concurrent_callers_never_overdraw_a_bucket(limiter):
    bucket = Bucket("shared", 50, 3600)
    start = threading.Barrier(16)

    def caller():
        start.wait()
        return [limiter.take([bucket]).allowed for _ in range(10)]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = [allowed for future in [pool.submit(caller) for _ in range(16)] for allowed in future.result()]
    assert len(results) == 160 and sum(results) == 50


def test_a_refused_request_takes_from_no_bucket(limiter):
    user, vendor = Bucket("user", 100, 3600), Bucket("vendor", 2, 3600)
    assert limiter.take([user, vendor]).allowed
    assert limiter.take([user, vendor]).allowed
    refused = limiter.take([user, vendor])
    assert not refused.allowed and refused.key == "vendor"  # the bucket that binds is the one reported
    assert limiter.take([user]).remaining == 97  # two taken, the refused one not


def test_buckets_are_kept_apart_by_key(limiter):
    assert limiter.take([Bucket("a", 1, 3600)]).allowed
    assert not limiter.take([Bucket("a", 1, 3600)]).allowed
    assert limiter.take([Bucket("b", 1, 3600)]).allowed


def test_an_expensive_request_takes_its_cost(limiter):
    bucket = Bucket("k", 10, 3600)
    assert limiter.take([bucket], cost=5).remaining == 5
    assert limiter.take([bucket], cost=5).remaining == 0
    assert not limiter.take([bucket], cost=5).allowed


def test_a_cost_above_the_capacity_takes_the_whole_bucket_rather_than_never_passing(limiter):
    bucket = Bucket("k", 4, 3600)
    first = limiter.take([bucket], cost=10)
    assert first.allowed and first.remaining == 0
    assert not limiter.take([bucket], cost=10).allowed


def test_memory_bucket_refills_at_its_pace(clock):
    limiter = MemoryRateLimiter(clock=clock)
    bucket = Bucket("k", 10, 10)  # one token a second
    for _ in range(10):
        assert limiter.take([bucket]).allowed
    assert not limiter.take([bucket]).allowed
    clock.advance(2.5)
    assert [limiter.take([bucket]).allowed for _ in range(3)] == [True, True, False]
    clock.advance(100)
    assert limiter.take([bucket]).remaining == 9  # full again, never more than full


def test_memory_sweep_forgets_only_full_buckets(clock):
    limiter = MemoryRateLimiter(clock=clock)
    limiter.SWEEP_AT = limiter._bucket_sweep_at = 10
    for _ in range(3):
        limiter.take([Bucket("slow", 3, 3600)])
    for n in range(10):
        limiter.take([Bucket(f"fast:{n}", 5, 1)])
    clock.advance(2)  # the fast buckets are full again, the slow one is not
    for n in range(30):
        limiter.take([Bucket(f"new:{n}", 5, 1)])
    assert not any(key.startswith("fast:") for key in limiter._buckets)
    assert not limiter.take([Bucket("slow", 3, 3600)]).allowed


def test_redis_buckets_are_shared_between_limiter_instances(redis_client, redis_limiter):
    """Two processes are two limiter objects on one Redis: they draw from one bucket."""
    other = RedisRateLimiter(redis_client, prefix=redis_limiter._prefix)
    bucket = Bucket("k", 2, 3600)
    assert redis_limiter.take([bucket]).allowed
    assert other.take([bucket]).allowed
    assert not redis_limiter.take([bucket]).allowed


def test_a_redis_bucket_expires_when_it_would_be_full_again(redis_client, redis_limiter):
    redis_limiter.take([Bucket("k", 10, 60)], cost=3)
    ttl = redis_client.pttl(redis_limiter._prefix + "tb:k")
    assert 17_000 < ttl <= 18_001  # 3 tokens at 6 s each: an expired key is a full bucket


def test_redis_bucket_never_lets_more_than_its_limit_through_in_any_window(redis_limiter):
    """Eight clients for 2.5 s against 10 per second: in every 1 s window, at most 10 + 10 (the refill) pass."""
    bucket = Bucket("window", 10, 1)
    passed: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.5

    def client():
        while time.monotonic() < stop:
            if redis_limiter.take([bucket]).allowed:
                with lock:
                    passed.append(time.monotonic())

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(client) for _ in range(8)]:
            future.result()
    passed.sort()
    busiest = max(sum(1 for t in passed if start <= t < start + 1.0) for start in passed)
    assert 10 <= busiest <= 21  # 1 token of slack for the clients' clocks against Redis's
    assert len(passed) <= 10 + 10 * 2.6
    assert len(passed) >= 30  # and it does let the refill through
