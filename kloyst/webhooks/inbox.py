"""The Redis inbox between the webhook request and the drainer (a reliable queue).

Why Redis and not the database in the request: Meta wants a 200 fast and retries anything
slower, so the request does the least that makes the delivery durable — one ``LPUSH`` of
the raw body — and never waits on a database that is busy, locked or down. (Redis must
persist: run it with AOF (appendonly yes) in production; the embedded default has no Redis and
writes the row in the request instead.)

The drainer takes work with the reliable-queue pattern: a batch moves *atomically* (one Lua
script) from the inbox to the drainer's own processing list, is written to
``webhook_delivery`` and committed, and only then is the processing list deleted. A drainer
that dies between the two leaves its processing list behind; each drainer keeps a
heartbeat key alive, and :meth:`RedisInbox.recover` puts the lists of drainers whose
heartbeat expired back at the old end of the inbox. Storing twice is harmless: deliveries
are unique by the hash of their body.

An item is the receive time (8 bytes, big-endian microseconds since the epoch) followed by
the raw body, exactly as signed.
"""

from __future__ import annotations

import datetime as dt
import struct

PREFIX = "kloyst:webhooks"
_STAMP = struct.Struct(">q")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# Move up to ARGV[1] of the oldest items (the right end) to the processing list; return them.
_TAKE = """
local items = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], 0, -#items - 1)
  for i = 1, #items do redis.call('RPUSH', KEYS[2], items[i]) end
end
return items
"""

# Give a dead drainer's processing list back to the oldest end of the inbox.
_GIVE_BACK = """
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #items do redis.call('RPUSH', KEYS[1], items[i]) end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return #items
"""


def pack(body: bytes, received_at: dt.datetime) -> bytes:
    micros = (received_at - _EPOCH) // dt.timedelta(microseconds=1)
    return _STAMP.pack(micros) + body


def unpack(item: bytes) -> tuple[bytes, dt.datetime]:
    (micros,) = _STAMP.unpack_from(item)
    return item[_STAMP.size:], _EPOCH + dt.timedelta(microseconds=micros)


class RedisInbox:
    def __init__(self, client, prefix: str = PREFIX) -> None:
        self.client = client
        self.key = f"{prefix}:inbox"
        self._drainers = f"{prefix}:drainers"
        self._prefix = prefix
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)

    def _processing(self, owner: str) -> str:
        return f"{self._prefix}:processing:{owner}"

    def _alive(self, owner: str) -> str:
        return f"{self._prefix}:alive:{owner}"

    # -- the request ---------------------------------------------------------------------

    def push(self, body: bytes, received_at: dt.datetime) -> None:
        self.client.lpush(self.key, pack(body, received_at))

    # -- a drainer -----------------------------------------------------------------------

    def heartbeat(self, owner: str, ttl_seconds: int) -> None:
        """Say ``owner`` is alive for ``ttl_seconds`` more; its processing list is its own until then."""
        pipe = self.client.pipeline()
        pipe.set(self._alive(owner), b"1", ex=ttl_seconds)
        pipe.sadd(self._drainers, owner)
        pipe.execute()

    def held(self, owner: str) -> list[bytes]:
        """What ``owner`` took and has not acknowledged (after a failed store, it stores these first)."""
        return self.client.lrange(self._processing(owner), 0, -1)

    def take(self, owner: str, limit: int, block_seconds: float = 0) -> list[bytes]:
        """Move up to ``limit`` of the oldest items to ``owner``'s processing list and return them.

        With ``block_seconds``, an empty inbox is waited on (``BLMOVE``) that long, so a
        drainer wakes the moment a webhook arrives instead of at its next poll.
        """
        items = self._oldest(owner, limit)
        if items or block_seconds <= 0:
            return items
        first = self.client.blmove(self.key, self._processing(owner), block_seconds, "RIGHT", "LEFT")
        if first is None:
            return []
        return [first, *self._oldest(owner, limit - 1)] if limit > 1 else [first]

    def _oldest(self, owner: str, limit: int) -> list[bytes]:
        # LRANGE lists the right end newest first; the oldest comes first here.
        return list(reversed(self._take(keys=[self.key, self._processing(owner)], args=[limit])))

    def acknowledge(self, owner: str) -> None:
        """The taken items are committed to the database: forget them."""
        self.client.delete(self._processing(owner))

    def recover(self) -> int:
        """Give the processing lists of drainers whose heartbeat expired back to the inbox; how many items."""
        recovered = 0
        for raw in self.client.smembers(self._drainers):
            owner = raw.decode()
            if not self.client.exists(self._alive(owner)):
                recovered += int(self._give_back(keys=[self.key, self._processing(owner), self._drainers],
                                                 args=[owner]))
        return recovered

    def retire(self, owner: str) -> None:
        """A drainer stopping cleanly: give back whatever it still holds, and forget it."""
        self._give_back(keys=[self.key, self._processing(owner), self._drainers], args=[owner])
        self.client.delete(self._alive(owner))

    def depth(self) -> int:
        return int(self.client.llen(self.key))
