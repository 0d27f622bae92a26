"""How fast each phone number may send: a shared token bucket per number, paced just under Meta's ceiling.

Why a token bucket and not "a counter for the current second": Meta's throughput limit (and
the sandbox that copies it) holds over *any* one-second window. A per-second counter lets a
whole second's quota go at the end of one second and another at the start of the next — two
seconds' worth inside one window, and 130429s. A bucket refilled continuously at ``rate``
with a small ``burst`` bounds any one-second window to ``rate + burst``.

The pace adapts. It starts at ``safety`` × the number's tier (80 or 1,000 mps). Each 130429
multiplies it by ``SLOW_DOWN`` and lowers its ceiling to just under the pace that was refused,
so the sender settles below the real limit instead of probing into it again and again; after
``RECOVER_AFTER`` seconds without a 130429 the pace climbs back by ``STEP`` toward that ceiling.

Two stores, one behaviour: Redis (buckets and paces shared by every worker process; one Lua
script takes tokens atomically on Redis's clock) and in-process for the embedded default.
Callers never sleep on a refusal: they get zero tokens and try again on their next tick.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

SLOW_DOWN = 0.9  # pace × this on a 130429
CEILING_MARGIN = 0.98  # new ceiling: the refused pace × this
RECOVER_AFTER = 3.0  # seconds without a 130429 before the pace climbs (by STEP)
STEP = 0.01  # how much of the tier the pace climbs per RECOVER_AFTER
CEILING_RECOVER_AFTER = 600.0  # a lowered ceiling creeps back toward ``safety`` after this long in peace
FLOOR = 0.05  # never below 5 % of the tier: a number always makes progress
BURST_SECONDS = 0.01  # the bucket holds at most this much of a second's tokens


@dataclass
class Pace:
    factor: float  # share of the tier currently allowed
    ceiling: float  # highest share allowed until a long quiet spell
    slowed_at: float  # when the last 130429 was recorded (time.time())


def burst_for(rate: float) -> float:
    """Room for 1.5 tokens at least: at 80 mps (78.4 paced) a bucket of 1 loses the fraction that accrues
    while the dispatcher claims, and 78.4 + 1.5 still stays under 80 in any second."""
    return max(1.5, rate * BURST_SECONDS)


# KEYS[1] bucket; ARGV rate (tokens/s), burst, want. Returns the granted tokens and what is left (a string:
# Lua numbers become integers on the way out). Redis's own clock, so every process shares one timeline.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 60)
return {granted, tostring(tokens)}
"""

# KEYS[1] bucket; ARGV count: give back tokens taken but not used (no message was due).
_GIVE_BACK = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then redis.call('HSET', KEYS[1], 'tokens', tostring(tokens + tonumber(ARGV[1]))) end
return 0
"""

# KEYS[1] pace hash; ARGV now, safety, slow_down, margin, floor. A 130429: slow down, lower the ceiling.
_SLOW = """
local now, safety = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'factor', 'ceiling', 'slowed_at')
local factor = tonumber(state[1]) or safety
local ceiling = tonumber(state[2]) or safety
local slowed_at = tonumber(state[3]) or 0
if now - slowed_at < 0.5 then return {tostring(factor), tostring(ceiling), tostring(slowed_at)} end
ceiling = math.min(ceiling, factor * tonumber(ARGV[4]))
factor = math.max(tonumber(ARGV[5]), factor * tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'factor', tostring(factor), 'ceiling', tostring(ceiling), 'slowed_at', tostring(now))
redis.call('EXPIRE', KEYS[1], 86400)
return {tostring(factor), tostring(ceiling), tostring(now)}
"""

# KEYS[1] pace hash; ARGV now, safety, recover_after, step. Climb back toward the ceiling when quiet.
_READ = """
local now, safety = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'factor', 'ceiling', 'slowed_at')
local factor = tonumber(state[1]) or safety
local ceiling = tonumber(state[2]) or safety
local slowed_at = tonumber(state[3]) or 0
local changed = false
if factor < ceiling and now - slowed_at >= tonumber(ARGV[3]) then
  factor = math.min(ceiling, factor + tonumber(ARGV[4]))
  changed = true
elseif ceiling < safety and now - slowed_at >= tonumber(ARGV[5]) then
  ceiling = math.min(safety, ceiling + tonumber(ARGV[4]))
  changed = true
end
if changed then
  slowed_at = now
  redis.call('HSET', KEYS[1], 'factor', tostring(factor), 'ceiling', tostring(ceiling), 'slowed_at',
             tostring(slowed_at))
  redis.call('EXPIRE', KEYS[1], 86400)
end
return {tostring(factor), tostring(ceiling), tostring(slowed_at)}
"""


class RedisGovernor:
    """Buckets and paces in Redis, shared by every sender process."""

    def __init__(self, client, safety: float, prefix: str = "kloyst:send") -> None:
        self._client = client
        self.safety = safety
        self._prefix = prefix
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)
        self._slow = client.register_script(_SLOW)
        self._read = client.register_script(_READ)

    def take(self, number_key: str, rate: float, want: int) -> tuple[int, float]:
        """``(granted, seconds until the next token)``: callers come back then, so no token overflows the
        small bucket while they are away."""
        if want <= 0:
            return 0, 0.0
        granted, left = self._take(keys=[f"{self._prefix}:bucket:{number_key}"], args=[rate, burst_for(rate), want])
        return int(granted), max(0.0, (1.0 - float(left)) / rate)

    def give_back(self, number_key: str, count: int) -> None:
        if count > 0:
            self._give_back(keys=[f"{self._prefix}:bucket:{number_key}"], args=[count])

    def pace(self, number_key: str) -> Pace:
        factor, ceiling, slowed_at = self._read(keys=[f"{self._prefix}:pace:{number_key}"],
                                                args=[time.time(), self.safety, RECOVER_AFTER, STEP,
                                                      CEILING_RECOVER_AFTER])
        return Pace(float(factor), float(ceiling), float(slowed_at))

    def slow_down(self, number_key: str) -> Pace:
        factor, ceiling, slowed_at = self._slow(keys=[f"{self._prefix}:pace:{number_key}"],
                                                args=[time.time(), self.safety, SLOW_DOWN, CEILING_MARGIN, FLOOR])
        return Pace(float(factor), float(ceiling), float(slowed_at))


class MemoryGovernor:
    """The same rules in one process (the embedded default has one sender)."""

    def __init__(self, safety: float, clock=time.monotonic, wall=time.time) -> None:
        self.safety = safety
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._paces: dict[str, Pace] = {}

    def take(self, number_key: str, rate: float, want: int) -> tuple[int, float]:
        if want <= 0:
            return 0, 0.0
        now, burst = self._clock(), burst_for(rate)
        with self._lock:
            tokens, at = self._buckets.get(number_key, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - at) * rate)
            granted = min(want, int(tokens))
            self._buckets[number_key] = (tokens - granted, now)
            return granted, max(0.0, (1.0 - (tokens - granted)) / rate)

    def give_back(self, number_key: str, count: int) -> None:
        with self._lock:
            if count > 0 and number_key in self._buckets:
                tokens, at = self._buckets[number_key]
                self._buckets[number_key] = (tokens + count, at)

    def pace(self, number_key: str) -> Pace:
        now = self._wall()
        with self._lock:
            pace = self._paces.setdefault(number_key, Pace(self.safety, self.safety, 0.0))
            if pace.factor < pace.ceiling and now - pace.slowed_at >= RECOVER_AFTER:
                pace.factor, pace.slowed_at = min(pace.ceiling, pace.factor + STEP), now
            elif pace.ceiling < self.safety and now - pace.slowed_at >= CEILING_RECOVER_AFTER:
                pace.ceiling, pace.slowed_at = min(self.safety, pace.ceiling + STEP), now
            return Pace(pace.factor, pace.ceiling, pace.slowed_at)

    def slow_down(self, number_key: str) -> Pace:
        now = self._wall()
        with self._lock:
            pace = self._paces.setdefault(number_key, Pace(self.safety, self.safety, 0.0))
            if now - pace.slowed_at >= 0.5:  # one burst of 130429s is one signal, not many
                pace.ceiling = min(pace.ceiling, pace.factor * CEILING_MARGIN)
                pace.factor = max(FLOOR, pace.factor * SLOW_DOWN)
                pace.slowed_at = now
            return Pace(pace.factor, pace.ceiling, pace.slowed_at)


def make_governor(redis_client, safety: float):
    return RedisGovernor(redis_client, safety) if redis_client is not None else MemoryGovernor(safety)
