"""Every process says it is alive once a second; a process that cannot say so knows it, and stops claiming."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid

import pytest
from sqlalchemy import create_engine, delete, insert, select

from kloyst.db import utcnow
from kloyst.heartbeat import Heartbeat, HeartbeatSettings, ProcessHeartbeat, alive_since, live_processes

FAST = HeartbeatSettings(interval_seconds=0.1, dead_after_seconds=0.4)


def _row(engine, process_id):
    with engine.connect() as conn:
        return conn.execute(select(ProcessHeartbeat.__table__).where(ProcessHeartbeat.id == process_id)).first()


def test_a_process_registers_beats_and_unregisters_when_it_stops(registry, committed_db):
    engine = registry["kloyst.engine"]
    heartbeat = Heartbeat(engine, "WORKER", FAST).start()
    try:
        first = _row(engine, heartbeat.id)
        assert (first.mode, first.pid) == ("WORKER", os.getpid())
        time.sleep(0.35)
        assert _row(engine, heartbeat.id).beat_at > first.beat_at
        assert heartbeat.healthy and heartbeat.is_alive()
        with engine.connect() as conn:
            assert heartbeat.id in {p["id"] for p in live_processes(conn, FAST)}
    finally:
        heartbeat.stop()
    assert _row(engine, heartbeat.id) is None
    assert not heartbeat.is_alive()


def test_a_process_that_cannot_reach_the_database_stops_calling_itself_healthy_and_recovers(registry, committed_db):
    engine = registry["kloyst.engine"]
    heartbeat = Heartbeat(engine, "WORKER", FAST).start()
    try:
        heartbeat.engine = create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/unreachable",
                                         connect_args={"connect_timeout": 1})
        deadline = time.monotonic() + 5
        while heartbeat.healthy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not heartbeat.healthy
        heartbeat.engine = engine
        deadline = time.monotonic() + 5
        while not heartbeat.healthy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heartbeat.healthy
    finally:
        heartbeat.stop()


def test_a_process_taken_for_dead_and_forgotten_registers_again_at_its_next_beat(registry, committed_db):
    engine = registry["kloyst.engine"]
    heartbeat = Heartbeat(engine, "OUTBOX", HeartbeatSettings(interval_seconds=60, dead_after_seconds=180)).start()
    try:
        with engine.begin() as conn:
            conn.execute(delete(ProcessHeartbeat.__table__).where(ProcessHeartbeat.id == heartbeat.id))
        assert heartbeat.beat()
        assert _row(engine, heartbeat.id).mode == "OUTBOX"
    finally:
        heartbeat.stop()


def test_rows_of_processes_dead_for_an_hour_are_forgotten(registry, committed_db):
    engine = registry["kloyst.engine"]
    heartbeat = Heartbeat(engine, "WORKER", HeartbeatSettings(interval_seconds=60, dead_after_seconds=180)).start()
    ghost, long_ago = uuid.uuid4(), utcnow() - dt.timedelta(hours=2)  # a process killed outright two hours ago
    with engine.begin() as conn:
        conn.execute(insert(ProcessHeartbeat.__table__).values(id=ghost, mode="WORKER", hostname="gone", pid=1,
                                                               started_at=long_ago, beat_at=long_ago))
    try:
        assert heartbeat.beat()
        assert _row(engine, ghost) is None
        assert _row(engine, heartbeat.id) is not None
    finally:
        heartbeat.stop()


def test_dead_after_must_leave_room_for_missed_beats():
    with pytest.raises(ValueError, match="three heartbeat intervals"):
        HeartbeatSettings(interval_seconds=1.0, dead_after_seconds=2.0)
    now = utcnow()
    assert alive_since(FAST, now) == now - dt.timedelta(seconds=0.4)
