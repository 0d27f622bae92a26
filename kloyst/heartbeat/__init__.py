"""Which Kloyst processes are alive, so that work a dead process had claimed comes back in seconds.

Why: a process claims work — a message it is sending to Meta — and may die holding it (SIGKILL,
OOM, a lost host). A lease long enough for the slowest legitimate call is far too long to wait
for an owner that is simply dead. So every ``kloyst run`` process keeps one row in
``process_heartbeat`` and beats it every ``kloyst.heartbeat.interval_seconds`` (1 s); claimed
rows name their owner (``message_log.claimed_by``), and any other process takes them back once
the owner's row has not been beaten for ``kloyst.heartbeat.dead_after_seconds`` (6 s), or is
gone. A process that stops cleanly first releases its work, then deletes its row, so nothing
waits at all. Leases stay, as a backstop for an owner that is alive but stuck.

**Clocks.** Beat times are written and compared with the processes' own UTC clocks, as leases
are: hosts keep NTP time, and ``dead_after_seconds`` leaves room for a little skew.

**Fencing.** A process that cannot beat (its database is unreachable, or it stalled) may already
have been taken for dead and had its claims taken back. :attr:`Heartbeat.healthy` turns False
once half of ``dead_after_seconds`` has passed without a successful beat, and owners stop
claiming new work until a beat succeeds again. Outcomes of work already in hand are still
written: they are guarded by the claim itself (an attempt number), so a claim that was taken
back is never overwritten.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from kloyst.db import utcnow
from kloyst.heartbeat.models import ProcessHeartbeat

__all__ = ["Heartbeat", "HeartbeatSettings", "ProcessHeartbeat", "OWNER_ALIVE", "alive_since", "live_processes"]

log = logging.getLogger(__name__)

_TABLE = ProcessHeartbeat.__table__
FORGET_AFTER = dt.timedelta(hours=1)  # rows of processes dead this long are deleted (they decide nothing any more)
FORGET_EVERY_SECONDS = 60.0

# SQL for "the process named by {owner} is alive", for statements that take back a dead owner's work. It needs the
# parameter :alive_since (:func:`alive_since`). A row that is gone counts as dead, like one not beaten in time.
OWNER_ALIVE = "EXISTS (SELECT 1 FROM process_heartbeat h WHERE h.id = {owner} AND h.beat_at >= :alive_since)"


@dataclass(frozen=True)
class HeartbeatSettings:
    interval_seconds: float = 1.0
    dead_after_seconds: float = 6.0

    @classmethod
    def from_settings(cls, settings) -> HeartbeatSettings:
        return cls(interval_seconds=float(settings["kloyst.heartbeat.interval_seconds"]),
                   dead_after_seconds=float(settings["kloyst.heartbeat.dead_after_seconds"]))

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0 or self.dead_after_seconds < 3 * self.interval_seconds:
            raise ValueError("kloyst.heartbeat.dead_after_seconds must be at least three heartbeat intervals, or a "
                             "process that merely missed a beat would be taken for dead")


def alive_since(settings: HeartbeatSettings, now: dt.datetime | None = None) -> dt.datetime:
    """The oldest beat that still counts as alive, for :data:`OWNER_ALIVE`'s ``:alive_since``."""
    return (now or utcnow()) - dt.timedelta(seconds=settings.dead_after_seconds)


def live_processes(conn, settings: HeartbeatSettings) -> list[dict]:
    """The processes beating now, oldest first (operators, tests)."""
    rows = conn.execute(select(_TABLE).where(_TABLE.c.beat_at >= alive_since(settings))
                        .order_by(_TABLE.c.started_at)).mappings().all()
    return [dict(row) for row in rows]


class Heartbeat:
    """This process's row in ``process_heartbeat``, beaten by a daemon thread from :meth:`start` to :meth:`stop`."""

    def __init__(self, engine, mode: str, settings: HeartbeatSettings | None = None) -> None:
        self.engine = engine
        self.mode = mode
        self.settings = settings or HeartbeatSettings()
        self.id = uuid.uuid4()
        self._last_beat: float | None = None  # monotonic time of the last successful beat
        self._next_forget = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> Heartbeat:
        """Register this process (raises if the database cannot be reached: nothing should start then)."""
        with self.engine.begin() as conn:
            self._register(conn)
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        log.info("process %s (%s) registered; beating every %.1f s", self.id, self.mode,
                 self.settings.interval_seconds)
        return self

    def stop(self) -> None:
        """Stop beating and delete the row: whatever this process still owned is free at once.

        Call it after the process released its work (the sender gives back what it did not send).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(_TABLE).where(_TABLE.c.id == self.id))
        except Exception:  # the row then ages out: others take its work back after dead_after_seconds
            log.exception("process %s could not unregister", self.id)

    @property
    def healthy(self) -> bool:
        """The last beat is recent enough that no other process can have taken this one for dead."""
        last = self._last_beat
        return last is not None and time.monotonic() - last < self.settings.dead_after_seconds / 2

    def is_alive(self) -> bool:
        """The beating thread runs (the metrics listener's ``/healthz`` asks)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def beat(self) -> bool:
        """Move ``beat_at`` forward once (re-registering if the row was forgotten); False if the database failed."""
        try:
            with self.engine.begin() as conn:
                now = utcnow()
                if not conn.execute(update(_TABLE).where(_TABLE.c.id == self.id).values(beat_at=now)).rowcount:
                    # Forgotten after a long stall: this process was taken for dead and its work taken back.
                    log.warning("process %s was taken for dead (no beat for over %s); registering again", self.id,
                                FORGET_AFTER)
                    self._register(conn)
                if time.monotonic() >= self._next_forget:
                    self._next_forget = time.monotonic() + FORGET_EVERY_SECONDS
                    conn.execute(delete(_TABLE).where(_TABLE.c.beat_at < now - FORGET_AFTER))
        except Exception as exc:
            if not self._failing:
                log.error("heartbeat of process %s failed: %s: %s", self.id, type(exc).__name__, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat of process %s beating again", self.id)
        self._failing = False
        self._last_beat = time.monotonic()
        return True

    def _register(self, conn) -> None:
        now = utcnow()
        conn.execute(insert(_TABLE).values(id=self.id, mode=self.mode, hostname=socket.gethostname()[:255],
                                           pid=os.getpid(), started_at=now, beat_at=now))

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval_seconds):
            self.beat()

