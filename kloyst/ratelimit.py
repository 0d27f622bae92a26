"""Rate limiting: fixed windows for throttles, token buckets for the API's general limit.

Two shapes, one mechanism (the same two stores, the same "never sleep, say how long to wait"):

* :meth:`hit` — a fixed window, "at most N hits per key per window". Sign-in throttles and
  task rate limits use it: its count is what they reason about (resetting an account's
  failures, spreading a backlog over the next windows).
* :meth:`take` — token buckets, for the general per-user, per-vendor and per-client limit
  (:mod:`kloyst.http.quotas`). A bucket holds up to ``capacity`` tokens and refills at
  ``capacity`` per ``period``; a request takes its cost from *every* bucket it is charged to,
  or from none. Unlike a fixed window, a bucket cannot be drained twice around a window's
  edge: over any interval of length T it lets through at most ``capacity + capacity·T/period``.

Two stores with one behaviour: Redis (shared by every process; each call is one Lua script,
so concurrent callers can never overdraw, and a bucket's clock is Redis's own ``TIME``, so
processes on hosts whose clocks differ agree) and an in-process store for the embedded
default, where there is only one process.

Callers never sleep on a refusal: they get ``retry_after`` seconds and decide (an HTTP
429 with ``Retry-After``, a task re-scheduled for the next window).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: int
    limit: int
    retry_after: float  # seconds until the window resets; 0 when allowed

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


@dataclass(frozen=True)
class Bucket:
    """A token bucket: up to ``capacity`` tokens, refilled at ``capacity`` per ``period`` seconds."""

    key: str
    capacity: int
    period: float

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.period <= 0:
            raise ValueError(f"bucket {self.key!r} needs a capacity of at least 1 and a positive period")

    def cost_of(self, cost: int) -> int:
        """What ``cost`` takes from this bucket: never more than it holds, or the request could never pass."""
        return min(cost, self.capacity)


@dataclass(frozen=True)
class Quota:
    """The answer of :meth:`take`, reported for the bucket that binds (the one with fewest whole tokens left).

    ``remaining`` whole tokens are left in it, it is full again in ``reset`` seconds, and a refused
    request can pass in ``retry_after`` seconds (0 when allowed), when every bucket holds its cost.
    """

    allowed: bool
    key: str
    limit: int
    period: float
    remaining: int
    reset: float
    retry_after: float

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))

    @property
    def reset_seconds(self) -> int:
        return math.ceil(self.reset)


def _quota(buckets: Sequence[Bucket], levels: Sequence[float], cost: int, allowed: bool) -> Quota:
    """The :class:`Quota` of buckets at ``levels`` (after the take when ``allowed``, untouched when refused)."""
    binding, binding_level, wait = buckets[0], levels[0], 0.0
    for bucket, level in zip(buckets, levels):
        if (math.floor(level), -level) < (math.floor(binding_level), -binding_level):
            binding, binding_level = bucket, level
        if not allowed:
            wait = max(wait, (bucket.cost_of(cost) - level) * bucket.period / bucket.capacity)
    reset = max(0.0, binding.capacity - binding_level) * binding.period / binding.capacity
    return Quota(allowed, binding.key, binding.capacity, binding.period, max(0, math.floor(binding_level)), reset,
                 0.0 if allowed else max(wait, 0.001))


class MemoryRateLimiter:
    """In-process counters; correct for one process (the embedded default).

    Each window is stored with the moment it *ends*, so the sweep that keeps memory bounded
    drops only windows that are over, whatever their length: a sweep triggered by a 60 s
    limit must not forget a 300 s per-account window and hand out a fresh budget.
    """

    SWEEP_AT = 100_000

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (ends_at, count)
        self._sweep_at = self.SWEEP_AT
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> (tokens, at, full_at)
        self._bucket_sweep_at = self.SWEEP_AT

    def _sweep(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        # Live windows survive a sweep; wait for real growth before the next O(n) pass.
        self._sweep_at = max(self.SWEEP_AT, 2 * len(self._windows))

    def hit(self, key: str, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        now = self._clock()
        with self._lock:
            ends_at, count = self._windows.get(key, (now, 0))
            if now >= ends_at:
                ends_at, count = now + window_seconds, 0
            count += cost
            self._windows[key] = (ends_at, count)
            if len(self._windows) > self._sweep_at:
                self._sweep(now)
        if count > limit:
            return Decision(False, count, limit, ends_at - now)
        return Decision(True, count, limit, 0.0)

    def reset(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)

    def _level(self, bucket: Bucket, now: float) -> float:
        tokens, at, _ = self._buckets.get(bucket.key, (bucket.capacity, now, now))
        return min(bucket.capacity, tokens + max(0.0, now - at) * bucket.capacity / bucket.period)

    def take(self, buckets: Sequence[Bucket], cost: int = 1) -> Quota:
        """Take ``cost`` from every bucket, or from none when one of them holds less."""
        now = self._clock()
        with self._lock:
            levels = [self._level(bucket, now) for bucket in buckets]
            allowed = all(level >= bucket.cost_of(cost) for bucket, level in zip(buckets, levels))
            if allowed:
                for i, bucket in enumerate(buckets):
                    levels[i] -= bucket.cost_of(cost)
                    full_at = now + (bucket.capacity - levels[i]) * bucket.period / bucket.capacity
                    self._buckets[bucket.key] = (levels[i], now, full_at)
                if len(self._buckets) > self._bucket_sweep_at:
                    # A full bucket is the same as no bucket: dropping it forgets nothing.
                    self._buckets = {k: v for k, v in self._buckets.items() if v[2] > now}
                    self._bucket_sweep_at = max(self.SWEEP_AT, 2 * len(self._buckets))
        return _quota(buckets, levels, cost, allowed)


_HIT_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl}
"""


# Token buckets: KEYS are the buckets; ARGV holds capacity, period (seconds) and cost for each, in turn.
# Every bucket is read and refilled first, and tokens are taken only when all of them hold their cost.
# A missing key is a full bucket, so each key expires when it would be full again.
_TAKE_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local levels = {}
local allowed = 1
for i = 1, #KEYS do
  local capacity, period, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local level = capacity
  if state[1] then
    level = math.min(capacity, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * capacity / period)
  end
  levels[i] = level
  if level < cost then
    allowed = 0
  end
end
if allowed == 1 then
  for i = 1, #KEYS do
    local capacity, period, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
    levels[i] = levels[i] - cost
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', levels[i]), 'at', string.format('%.6f', now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - levels[i]) * period * 1000 / capacity) + 1)
  end
end
local answer = {allowed}
for i = 1, #KEYS do
  answer[i + 1] = string.format('%.17g', levels[i])
end
return answer
"""


class RedisRateLimiter:
    """Counters in Redis, shared by every process; one atomic script per hit."""

    def __init__(self, client, prefix: str = "kloyst:rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_HIT_SCRIPT)
        self._take_script = client.register_script(_TAKE_SCRIPT)

    def hit(self, key: str, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        count, ttl_ms = self._script(keys=[self._prefix + key], args=[cost, max(1, int(window_seconds * 1000))])
        count = int(count)
        if count > limit:
            return Decision(False, count, limit, max(0, int(ttl_ms)) / 1000.0)
        return Decision(True, count, limit, 0.0)

    def reset(self, key: str) -> None:
        self._client.delete(self._prefix + key)

    def take(self, buckets: Sequence[Bucket], cost: int = 1) -> Quota:
        """Take ``cost`` from every bucket, or from none when one of them holds less (one atomic script)."""
        args: list = []
        for bucket in buckets:
            args += [bucket.capacity, repr(float(bucket.period)), bucket.cost_of(cost)]
        allowed, *levels = self._take_script(keys=[self._prefix + "tb:" + b.key for b in buckets], args=args)
        return _quota(buckets, [float(level) for level in levels], cost, bool(int(allowed)))


def make_rate_limiter(redis_client):
    return RedisRateLimiter(redis_client) if redis_client is not None else MemoryRateLimiter()
