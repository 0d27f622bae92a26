"""Benchmark: one outbox relay draining a large, lopsided backlog on PostgreSQL into Redis.

    .venv/bin/python bench/outbox_relay.py [--events 1000000] [--vendors 200] [--big 900000]

Loads ``--events`` pending events over ``--vendors`` vendors (one holding ``--big`` of them,
one holding exactly 10), then runs one relay — the same loop as ``SERVICE_TYPE=OUTBOX``:
claim → publish to RedisHuey in one command per batch → record the batch published — until
the backlog is gone. Prints events/s, the claim query's
time per batch (median and p95, ms), the plan and index the claim uses, and how long the
10-event vendor waited for all its events to be published. Uses its own database
(``kloyst_bench``) and its own Redis queue name; the queue is emptied after every batch, as
if workers kept up, so the relay's own speed is what is measured. The drain runs without
the reconciler (emptying the queue behind the workers' backs is exactly the loss it
repairs), which is then timed on its own: one pass with nothing leased, and one with the
queue full (``max_queue_depth`` messages, the most backpressure lets it hold), where it
must read the whole queue and take nothing back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time
import uuid

import sqlalchemy as sa

sys.path.insert(0, ".")

from kloyst import make_configurator, testing  # noqa: E402
from kloyst.db import make_engine, migrate  # noqa: E402
from kloyst.outbox import relay as relay_module  # noqa: E402
from kloyst.outbox.reconcile import Reconciler  # noqa: E402
from kloyst.plugins import build_plugin_manager  # noqa: E402

FILLFACTOR = int(__import__("os").environ.get("FILLFACTOR", "0"))  # override the table's own (70) to compare
SMALL_VENDOR = uuid.UUID("ffffffff-0000-4000-8000-000000000010")  # sorts after the crowd


def load(engine, events: int, vendors: int, big: int) -> None:
    crowd = vendors - 2
    rest = events - big - 10
    with engine.begin() as c:
        c.execute(sa.text("TRUNCATE outbox_event RESTART IDENTITY"))
        if FILLFACTOR:
            c.execute(sa.text(f"ALTER TABLE outbox_event SET (fillfactor = {FILLFACTOR})"))
        payload = json.dumps({"task": "bench.noop", "kwargs": {}})
        c.execute(sa.text("""
            INSERT INTO outbox_event (vendor_id, topic, payload, status, attempts, available_at, created_at)
            SELECT CASE
                     WHEN g <= :big THEN '00000000-0000-4000-8000-000000000001'::uuid
                     ELSE ('00000000-0000-4000-8000-' || lpad(to_hex(2 + (g % :crowd)), 12, '0'))::uuid
                   END,
                   'kloyst.task', CAST(:payload AS jsonb), 'pending', 0, now() - interval '1 minute', now()
              FROM generate_series(1, :n) AS g
        """), {"big": big, "crowd": crowd, "payload": payload, "n": big + rest})
        c.execute(sa.text("""
            INSERT INTO outbox_event (vendor_id, topic, payload, status, attempts, available_at, created_at)
            SELECT :small, 'kloyst.task', CAST(:payload AS jsonb), 'pending', 0, now() - interval '1 minute', now()
              FROM generate_series(1, 10)
        """), {"small": SMALL_VENDOR, "payload": payload})
        c.execute(sa.text("ANALYZE outbox_event"))


def explain_claim(engine, relay) -> str:
    sql = str(relay_module._VENDOR_CLAIM.compile(engine, compile_kwargs={"literal_binds": False}))
    with engine.connect() as c:
        vendors = list(c.execute(relay_module._DISCOVER_VENDORS, {"max_vendors": 100_000}).scalars())
    params = {"vendors": vendors, "floors": [0] * len(vendors), "limit": 500, "per_vendor": 50, "batch": 0,
              "leased_until": "2100-01-01T00:00:00+00:00"}
    with engine.connect() as c:
        trans = c.begin()
        plan = c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql.replace("%(", "%(").strip(),
                                 params).scalars().all()
        trans.rollback()
    return "\n".join(plan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--vendors", type=int, default=200)
    parser.add_argument("--big", type=int, default=900_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()

    url = testing.create_database("kloyst_bench")
    engine = make_engine(url)
    migrate.upgrade(build_plugin_manager(), engine)
    started = time.perf_counter()
    load(engine, args.events, args.vendors, args.big)
    print(f"loaded {args.events:,} pending events over {args.vendors} vendors in {time.perf_counter() - started:.1f} s")

    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": args.redis_url,
                "kloyst.queue.backend": "redis", "kloyst.queue.immediate": "false", "kloyst.queue.name": "bench",
                "kloyst.log.dir": "var/bench-log", "kloyst.log.level": "WARNING"}
    registry = make_configurator({"here": "."}, settings, environ={}).registry
    queue = registry["kloyst.queue"]
    redis = queue.huey.storage.conn
    redis.delete(queue.huey.storage.queue_key)

    # No reconciler during the drain: see the module docstring.
    without_reconciler = dataclasses.replace(relay_module.RelaySettings.from_settings(registry.settings),
                                             reconcile_interval_seconds=float("inf"))
    relay = relay_module.Relay(registry, without_reconciler)
    relay.reconciler.run()  # the one pass a relay makes at start, before anything is leased
    print("\nclaim plan (first batch, 1,000,000 pending):")
    print(explain_claim(registry["kloyst.engine"], relay))

    small = str(SMALL_VENDOR)
    seen_small = 0
    small_done_at = None
    t0 = time.perf_counter()

    first_phase = {"events": 0, "seconds": None}

    def on_published(rows) -> None:
        nonlocal seen_small, small_done_at
        first_phase["events"] += len(rows)
        if first_phase["seconds"] is None and first_phase["events"] >= 100_000:
            first_phase["seconds"] = time.perf_counter() - t0
        seen_small += sum(1 for r in rows if r.vendor_id == small)
        if small_done_at is None and seen_small >= 10:
            small_done_at = time.perf_counter() - t0
        # Workers that keep up: empty the queue, so backpressure (max_queue_depth) never pauses the relay
        # and what is measured is the relay itself.
        redis.delete(queue.huey.storage.queue_key)

    # The same loop SERVICE_TYPE=OUTBOX runs, until the outbox is empty.
    published = relay.run(threading.Event(), until_idle=True, on_published=on_published)
    elapsed = time.perf_counter() - t0
    claim_ms = [seconds * 1000 for seconds in relay.claim_seconds[:-1]]  # the last claim found nothing
    batches = len(claim_ms)
    redis.delete(queue.huey.storage.queue_key)

    claim_ms.sort()
    print(f"\npublished: {published:,} events in {elapsed:.1f} s = {published / elapsed:,.0f} events/s "
          f"({batches:,} batches)")
    if first_phase["seconds"]:
        print(f"first 100,000 events (backlog still >= {args.events - 100_000:,}): "
              f"{100_000 / first_phase['seconds']:,.0f} events/s")
    print(f"claim query per batch: median {statistics.median(claim_ms):.2f} ms, "
          f"p95 {claim_ms[int(len(claim_ms) * 0.95)]:.2f} ms")
    print(f"10-event vendor fully published after: {small_done_at * 1000:.0f} ms" if small_done_at is not None
          else "10-event vendor: not seen")
    reconcile_passes(registry, engine, redis, queue)
    engine.dispose()
    registry["kloyst.engine"].dispose()
    testing.drop_database("kloyst_bench")
    return 0


def reconcile_passes(registry, engine, redis, queue, runs: int = 20) -> None:
    """Time the reconciler: a pass with nothing leased, and one with the queue full of live messages."""
    with engine.begin() as c:
        c.execute(sa.text("TRUNCATE outbox_event, outbox_batch RESTART IDENTITY"))
    reconciler = Reconciler(registry)
    idle = [timed(reconciler.run)[1] for _ in range(runs)]
    depth = registry.settings["kloyst.outbox.max_queue_depth"]
    load(engine, depth, 20, depth // 2)
    relay = relay_module.Relay(registry)
    redis.delete(queue.huey.storage.queue_key)
    while relay.publish(*relay.claim()):
        pass
    full = []
    for _ in range(runs):
        counts, seconds = timed(reconciler.run)
        assert counts == {"expired_leases": 0, "lost_deliveries": 0, "suspected": 0}, counts
        full.append(seconds)
    print(f"reconcile pass, nothing leased: median {statistics.median(idle) * 1000:.2f} ms; "
          f"with {queue.depth():,} live messages queued: median {statistics.median(full) * 1000:.2f} ms, "
          f"max {max(full) * 1000:.2f} ms (nothing taken back)")
    redis.delete(queue.huey.storage.queue_key)


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
