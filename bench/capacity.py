"""Benchmark: what one message costs the deployment people run: CPU per mode, rows, bytes and WAL, Redis per task.

    .venv/bin/python bench/capacity.py [--recipients 20000] [--idle-seconds 10] [--workers 1] [--webhooks 1]
                                       [--relays 1]

Starts the multi-process deployment (API_GATEWAY, WEBHOOK, WORKER, OUTBOX as separate ``kloyst run``
processes on PostgreSQL and Redis) and the Meta sandbox (its own process, 1,000 mps, 100 ms latency,
signed status webhooks: sent, delivered, read), then sends a campaign of ``--recipients`` and waits
until every message is read and every webhook applied. Measured around the campaign:

* CPU per message of each process (user + system time from ``/proc/<pid>/stat``), less what the
  process burns idle (its heartbeat and polls, measured over ``--idle-seconds`` before the launch), and
  of PostgreSQL's and Redis's server processes (every one on the machine: run it on a quiet one);
* rows written per message in each table, and bytes per message (``pg_total_relation_size`` of every
  table) and WAL bytes per message (``pg_current_wal_lsn``) in PostgreSQL;
* Redis memory per queued task: outbox events relayed into a queue no worker reads
  (``INFO memory``'s ``used_memory``, before and after).

``--workers``, ``--webhooks`` and ``--relays`` run that many processes of the mode (scaled out: the
WEBHOOK processes share one port with ``REUSE_PORT``); CPU is then reported per process and summed
per mode.

Prints a JSON document with every figure (docs/capacity.md reads them). Uses its own database
(``kloyst_bench_capacity``) and Redis database 14.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "chaos"))

from chaos_support import (  # noqa: E402
    CALM_NUMBER,
    CHAOS_NUMBER,
    WABA,
    arrange_vendor,
    campaign_stats,
    deployment_settings,
    launch_campaign,
    registry_for,
    wait_until_quiet,
)

from kloyst import testing  # noqa: E402
from kloyst.outbox import relay as relay_module  # noqa: E402
from kloyst.testing.deployment import Deployment, Sandbox  # noqa: E402
from kloyst.testing.processes import eventually, free_port  # noqa: E402

DATABASE = "kloyst_bench_capacity"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def servers_cpu() -> dict[str, float]:
    """CPU time so far of every PostgreSQL and Redis server process on this machine (the bench's only load)."""
    totals = {"postgresql": 0.0, "redis": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
            if command in ("postgres", "postmaster"):
                totals["postgresql"] += cpu_seconds(int(entry.name))
            elif command == "redis-server":
                totals["redis"] += cpu_seconds(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):  # a backend that ended meanwhile
            continue
    return totals


def cpu_of(deployment: Deployment) -> dict[str, float]:
    return {**{name: cpu_seconds(service.process.pid) for name, service in deployment.services.items()},
            **servers_cpu()}


def database_state(engine) -> dict:
    """Rows and bytes (with indexes and TOAST) per table, and the WAL position."""
    with engine.connect() as c:
        tables = dict(c.execute(sa.text("SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables "
                                        "ORDER BY relname")).all())
        rows = {t: c.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar() for t in tables}
        wal = c.execute(sa.text("SELECT pg_current_wal_lsn()::text")).scalar()
    return {"rows": rows, "table_bytes": tables, "bytes": sum(tables.values()), "wal": wal}


def wal_bytes(engine, start: str, end: str) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.text("SELECT pg_wal_lsn_diff(CAST(:end AS pg_lsn), CAST(:start AS pg_lsn))"),
                             {"start": start, "end": end}).scalar())


def redis_bytes_per_task(registry, engine, tasks: int = 20_000) -> float:
    """Outbox events relayed into a queue nobody reads (the deployment is stopped): used_memory growth per task."""
    queue = registry["kloyst.queue"]
    redis = queue.huey.storage.conn
    payload = json.dumps({"task": "bench.noop", "kwargs": {"vendor_id": str(uuid.uuid4())}})
    with engine.begin() as c:
        c.execute(sa.text("""
            INSERT INTO outbox_event (vendor_id, topic, payload, status, attempts, failures, available_at, created_at)
            SELECT gen_random_uuid(), 'kloyst.task', CAST(:payload AS jsonb), 'pending', 0, 0, now(), now()
              FROM generate_series(1, :n)"""), {"n": tasks, "payload": payload})
    redis.delete(queue.huey.storage.queue_key)
    before = int(redis.info("memory")["used_memory"])
    relay = relay_module.Relay(registry)
    while relay.publish(*relay.claim()):
        pass
    after = int(redis.info("memory")["used_memory"])
    depth = queue.depth()
    redis.delete(queue.huey.storage.queue_key)
    return (after - before) / max(depth, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--webhooks", type=int, default=1)
    parser.add_argument("--relays", type=int, default=1)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    modes = [("api", "API_GATEWAY", {}),
             *((f"webhook-{i}", "WEBHOOK", {"REUSE_PORT": "true"}) for i in range(1, args.webhooks + 1)),
             *((f"worker-{i}", "WORKER", {}) for i in range(1, args.workers + 1)),
             *((f"outbox-{i}", "OUTBOX", {}) for i in range(1, args.relays + 1))]

    database_url = testing.create_database(DATABASE)
    directory = Path(tempfile.mkdtemp(prefix="kloyst-capacity-"))
    sandbox_port = free_port()
    settings = deployment_settings(database_url, args.redis_url, f"http://127.0.0.1:{sandbox_port}",
                                   **{"kloyst.outbox.max_queue_depth": "0",
                                      "kloyst.retention.interval_seconds": "0",  # nothing pruned under the bench
                                      "wallet.check_interval_seconds": "0"})
    deployment = Deployment.from_settings(directory, settings)
    for name, mode, env in modes:
        deployment.add(name, mode, **env)
    sandbox = Sandbox(deployment.ini, directory / "sandbox.log", numbers={CALM_NUMBER: 1000, CHAOS_NUMBER: 80},
                      waba=WABA, port=sandbox_port, latency_ms=100, webhook_url=deployment.webhook_url)
    registry = None
    try:
        for command in (("db", "upgrade"), ("pricing", "load-card", "--development")):
            done = deployment.cli(*command)
            assert done.returncode == 0, done.stdout + done.stderr
        sandbox.start()
        deployment.start()
        registry = registry_for(deployment)
        engine = registry["kloyst.engine"]
        registry["kloyst.redis"].flushdb()
        vendor = arrange_vendor(deployment, registry, args.recipients, name="Capacity Co")
        time.sleep(2)
        idle_start, idle_at = cpu_of(deployment), time.monotonic()
        time.sleep(args.idle_seconds)
        idle = {name: (cpu - idle_start[name]) / (time.monotonic() - idle_at)
                for name, cpu in cpu_of(deployment).items()}

        before_db, before_cpu, launched = database_state(engine), cpu_of(deployment), time.monotonic()
        campaign_id = launch_campaign(deployment, vendor, CALM_NUMBER, "Capacity")
        eventually(lambda: campaign_stats(deployment, vendor, campaign_id),
                   lambda s: s["status"] == "COMPLETED" and s["counts"].get("read", 0) == args.recipients,
                   "every message read", 900, pause=1.0)
        wait_until_quiet(deployment, sandbox, engine, timeout=300)
        seconds = time.monotonic() - launched
        after_cpu, after_db = cpu_of(deployment), database_state(engine)

        deployment.stop()  # no worker may take the tasks queued below
        n = args.recipients
        cpu = {name: {"cpu_us_per_message": round((after_cpu[name] - before_cpu[name] - idle[name] * seconds)
                                                  / n * 1e6),
                      "idle_cpu_percent": round(idle[name] * 100, 2)} for name in after_cpu}
        rows = {t: round((after_db["rows"][t] - before_db["rows"].get(t, 0)) / n, 3) for t in after_db["rows"]
                if after_db["rows"][t] != before_db["rows"].get(t, 0)}
        table_bytes = {t: round((after_db["table_bytes"][t] - before_db["table_bytes"].get(t, 0)) / n)
                       for t in after_db["table_bytes"]
                       if after_db["table_bytes"][t] - before_db["table_bytes"].get(t, 0) >= n}  # ≥ 1 B/message
        by_mode: dict[str, int] = {}
        for name, mode, _ in modes:
            by_mode[mode] = by_mode.get(mode, 0) + cpu[name]["cpu_us_per_message"]
        result = {
            "recipients": n, "seconds_launch_to_quiet": round(seconds, 1),
            "messages_per_second": round(n / seconds, 1),
            "processes": {mode: sum(1 for _, m, _ in modes if m == mode) for _, mode, _ in modes},
            "cpu_by_process": cpu,
            "cpu_us_per_message_by_mode": by_mode,
            "rows_per_message": rows,
            "bytes_per_message_by_table": table_bytes,
            "bytes_per_message": round((after_db["bytes"] - before_db["bytes"]) / n),
            "wal_bytes_per_message": round(wal_bytes(engine, before_db["wal"], after_db["wal"]) / n),
            "redis_bytes_per_queued_task": round(redis_bytes_per_task(registry, engine)),
        }
        print(json.dumps(result, indent=2))
    finally:
        deployment.kill_all()
        sandbox.stop()
        if registry is not None:
            registry["kloyst.engine"].dispose()
        testing.drop_database(DATABASE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
