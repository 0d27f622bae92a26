"""Fixtures shared by the unit tests of the two rate limiters (``kloyst.ratelimit``): a clock the test moves, and
each limiter in both stores — in memory and on the suite's real Redis (keys under a prefix of their own)."""

from __future__ import annotations

import uuid

import pytest

from kloyst.ratelimit import MemoryRateLimiter, RedisRateLimiter


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_limiter(redis_client):
    prefix = f"kloyst:test-limits:{uuid.uuid4().hex}:"
    yield RedisRateLimiter(redis_client, prefix=prefix)
    for key in redis_client.scan_iter(match=prefix + "*"):
        redis_client.delete(key)


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        return MemoryRateLimiter()
    return request.getfixturevalue("redis_limiter")
