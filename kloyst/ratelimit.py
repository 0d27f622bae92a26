"""Fixed-window rate limiting: "at most N hits per key per window", with the time to wait when over.

Two stores with one behaviour: Redis (shared by every process; the count and its expiry
are set atomically by one Lua script, so concurrent callers can never exceed N) and an
in-process store for the embedded default, where there is only one process.

Callers never sleep on a refusal: they get ``retry_after`` seconds and decide (an HTTP
429 with ``Retry-After``, a task re-scheduled for the next window).
"""

from __future__ import annotations

import math
import threading
import time
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


class RedisRateLimiter:
    """Counters in Redis, shared by every process; one atomic script per hit."""

    def __init__(self, client, prefix: str = "kloyst:rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_HIT_SCRIPT)

    def hit(self, key: str, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        count, ttl_ms = self._script(keys=[self._prefix + key], args=[cost, max(1, int(window_seconds * 1000))])
        count = int(count)
        if count > limit:
            return Decision(False, count, limit, max(0, int(ttl_ms)) / 1000.0)
        return Decision(True, count, limit, 0.0)

    def reset(self, key: str) -> None:
        self._client.delete(self._prefix + key)


def make_rate_limiter(redis_client):
    return RedisRateLimiter(redis_client) if redis_client is not None else MemoryRateLimiter()
