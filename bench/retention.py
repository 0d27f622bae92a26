"""Benchmark: pruning delivered outbox events while a relay claims on the same table (PostgreSQL).

    .venv/bin/python bench/retention.py [--expired 2000000] [--pending 300000] [--pause-ratio 1.0] [--batch-size 5000]

Loads ``--expired`` delivered outbox events eight days old (past ``OUTBOX_RETENTION_DAYS``), then
drains ``--pending`` fresh events with one relay (the loop ``SERVICE_TYPE=OUTBOX`` runs; the queue
is emptied after every batch, as if workers kept up) twice: once alone, and once while the
retention pass (``kloyst db prune --only kloyst.outbox_events``, in a thread of its own with its own
connections) removes the expired events. Prints the prune's rate (rows/s) and the relay's claim
time per batch (median and p99, ms) without and with the prune beside it: the prune must not
stall the relay. Uses its own database (``kloyst_bench_retention``) and Redis queue name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time

import sqlalchemy as sa

sys.path.insert(0, ".")

from kloyst import make_configurator, testing  # noqa: E402
from kloyst.db import make_engine, migrate  # noqa: E402
from kloyst.outbox import relay as relay_module  # noqa: E402
from kloyst.plugins import build_plugin_manager  # noqa: E402
from kloyst.retention import Pruner, policies  # noqa: E402

DATABASE = "kloyst_bench_retention"
PAYLOAD = json.dumps({"task": "bench.noop", "kwargs": {}})


def load(engine, count: int, *, status: str, age: str, vendors: int = 200) -> None:
    """``count`` events of ``vendors`` vendors, ``age`` old (a PostgreSQL interval), in ``status``."""
    delivered = "now() - CAST(:age AS interval)" if status == "delivered" else "NULL"
    with engine.begin() as c:
        c.execute(sa.text(f"""
            INSERT INTO outbox_event (vendor_id, topic, payload, status, attempts, failures, available_at,
                                      created_at, delivered_at)
            SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(1 + (g % :vendors)), 12, '0'))::uuid,
                   'kloyst.task', CAST(:payload AS jsonb), :status, 0, 0, now() - CAST(:age AS interval),
                   now() - CAST(:age AS interval), {delivered}
              FROM generate_series(1, :n) AS g
        """), {"n": count, "vendors": vendors, "payload": PAYLOAD, "status": status, "age": age})
        c.execute(sa.text("ANALYZE outbox_event"))


def drain(registry, queue) -> list[float]:
    """Run one relay until nothing is pending; its claim times (ms), the last (empty) one left out."""
    settings = dataclasses.replace(relay_module.RelaySettings.from_settings(registry.settings),
                                   reconcile_interval_seconds=float("inf"))
    relay = relay_module.Relay(registry, settings)
    redis = queue.huey.storage.conn
    relay.run(threading.Event(), until_idle=True,
              on_published=lambda rows: redis.delete(queue.huey.storage.queue_key))
    return [seconds * 1000 for seconds in relay.claim_seconds[:-1]]


def summary(claims: list[float]) -> str:
    ordered = sorted(claims)
    return (f"median {statistics.median(ordered):.2f} ms, p99 {ordered[int(len(ordered) * 0.99)]:.2f} ms "
            f"({len(ordered):,} batches)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expired", type=int, default=2_000_000)
    parser.add_argument("--pending", type=int, default=300_000)
    parser.add_argument("--pause-ratio", type=float, help="kloyst.retention.pause_ratio (default: the setting's)")
    parser.add_argument("--batch-size", type=int, help="kloyst.retention.batch_size (default: the setting's)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()

    url = testing.create_database(DATABASE)
    engine = make_engine(url)
    migrate.upgrade(build_plugin_manager(), engine)
    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": args.redis_url,
                "kloyst.queue.backend": "redis", "kloyst.queue.immediate": "false",
                "kloyst.queue.name": "bench-retention", "kloyst.log.dir": "var/bench-log",
                "kloyst.log.level": "WARNING"}
    if args.pause_ratio is not None:
        settings["kloyst.retention.pause_ratio"] = str(args.pause_ratio)
    if args.batch_size is not None:
        settings["kloyst.retention.batch_size"] = str(args.batch_size)
    registry = make_configurator({"here": "."}, settings, environ={}).registry
    queue = registry["kloyst.queue"]
    queue.huey.storage.conn.delete(queue.huey.storage.queue_key)
    try:
        started = time.perf_counter()
        load(engine, args.expired, status="delivered", age="8 days")
        print(f"loaded {args.expired:,} delivered events 8 days old in {time.perf_counter() - started:.1f} s")

        load(engine, args.pending, status="pending", age="1 minute")
        alone = drain(registry, queue)
        print(f"relay alone, {args.pending:,} events: claim {summary(alone)}")

        load(engine, args.pending, status="pending", age="1 minute")
        pruned: dict = {}

        def prune() -> None:
            begun = time.perf_counter()
            [result] = Pruner(registry, policies(registry)).run(only=["kloyst.outbox_events"])
            pruned.update(rows=result.removed, seconds=time.perf_counter() - begun)

        pruner = threading.Thread(target=prune)
        pruner.start()
        beside = drain(registry, queue)
        print(f"relay beside the prune, {args.pending:,} events: claim {summary(beside)}")
        pruner.join()
        print(f"prune: {pruned['rows']:,} delivered events in {pruned['seconds']:.1f} s = "
              f"{pruned['rows'] / pruned['seconds']:,.0f} rows/s (batches of "
              f"{registry.settings['kloyst.retention.batch_size']:,}, pause ratio "
              f"{registry.settings['kloyst.retention.pause_ratio']})")
        with engine.connect() as c:
            left = c.execute(sa.text("SELECT count(*) FROM outbox_event WHERE status = 'delivered' "
                                     "AND created_at < now() - interval '7 days'")).scalar()
        print(f"expired delivered events left: {left}")
    finally:
        queue.huey.storage.conn.delete(queue.huey.storage.queue_key)
        engine.dispose()
        registry["kloyst.engine"].dispose()
        testing.drop_database(DATABASE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
