"""Benchmark: a 20,000-recipient campaign through the multi-process deployment, without and with faults.

    .venv/bin/python bench/chaos.py [--recipients 20000] [--latency-ms 100] [--seed 20261205] [--runs 1]

The deployment of ``tests/chaos`` (API_GATEWAY, WEBHOOK, two WORKERs and OUTBOX as separate
``kloyst run`` processes on PostgreSQL and Redis; ``kloyst sandbox`` in its own process with two
1,000-mps numbers at ``--latency-ms``). One vendor with ``--recipients`` contacts sends two
campaigns of the ``welcome`` template, one per number:

* **calm**: no fault — msg/s (first to last ``sent_at``) and duplicates (must be 0);
* **chaos**: the seeded schedule of ``tests/chaos`` compressed to the campaign's length (OUTBOX
  killed during the fan-out; each WORKER alone, both together, WEBHOOK, API_GATEWAY killed; Redis
  flushed; WEBHOOK down 10–12 s while a WORKER dies), each process back 3–5 s later.

For every fault it prints what it cost: duplicate sends blamed on it (a second send Meta
accepted after that kill), and how long until what it interrupted resumed — a WORKER: until
every message the dead process held was adopted or sent again; OUTBOX: until no outbox event
has been due for more than a second; WEBHOOK: until every webhook Meta had to retry is applied;
FLUSHDB: until every task Redis held is delivered; API_GATEWAY: until it answers again. Every
run ends with the checks of the chaos tests (``kloyst messages check``, ``kloyst wallet check``,
stats against SQL); a run that fails them says so. Uses its own database
(``kloyst_bench_chaos``) and Redis database 14 (flushed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "chaos"))

from chaos_support import (SERVICES, WABA, arrange_vendor, campaign_stats, chaos_schedule,  # noqa: E402
                           deployment_settings, duplicates_per_kill, eventually, launch_campaign, registry_for,
                           run_faults, verdict, wait_until_quiet)

from kloyst import testing  # noqa: E402
from kloyst.testing.deployment import Deployment, Sandbox  # noqa: E402
from kloyst.testing.processes import free_port  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/14"
DATABASE = "kloyst_bench_chaos"
CALM, CHAOS = "100000000000001", "100000000000003"  # two 1,000-mps numbers of the sandbox's WABA


class Watch:
    """Samples the deployment every 0.1 s and times how long each fault's damage lasts."""

    def __init__(self, engine, sandbox: Sandbox, deployment: Deployment) -> None:
        self.engine, self.sandbox, self.deployment = engine, sandbox, deployment
        self.pending: list[dict] = []  # faults whose damage is still being waited out
        self.resumed: list[dict] = []
        self.log: list[dict] = []  # every fault watched, with what it held (written to watch.json for a post-mortem)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def fault(self, fault, done_at: float) -> None:
        """Note a fault just carried out (``done_at``: time.time()) and what to wait for (``run_faults``' after)."""
        entry = {"fault": f"{fault.action} {fault.target}".strip(), "at": done_at}
        self.log.append(entry)
        if fault.action == "kill" and fault.target.startswith("worker"):
            entry["held"] = self._held_by(self.deployment[fault.target].process.pid)
        elif fault.action == "flushdb":
            with self.engine.connect() as conn:
                entry["tasks"] = [r[0] for r in conn.execute(sa.text(
                    "SELECT id FROM outbox_event WHERE status = 'leased'"))]
        elif fault.action == "kill":
            return  # OUTBOX, WEBHOOK, API_GATEWAY: timed from their restart
        elif fault.action == "start" and fault.target.startswith("worker"):
            return  # a WORKER's damage is its held messages, timed from the kill
        self.pending.append(entry)

    def _held_by(self, pid: int) -> list:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text(
                "SELECT m.id FROM message_log m JOIN process_heartbeat h ON h.id = m.claimed_by "
                "WHERE h.pid = :pid AND m.status = 'SENDING'"), {"pid": pid})]

    def _done(self, entry: dict) -> bool:
        with self.engine.connect() as conn:
            if "held" in entry:
                return not entry["held"] or not conn.execute(sa.text(
                    "SELECT 1 FROM message_log WHERE id = ANY(:ids) AND status IN ('SENDING', 'QUEUED') LIMIT 1"),
                    {"ids": entry["held"]}).first()
            if "tasks" in entry:
                return not entry["tasks"] or not conn.execute(sa.text(
                    "SELECT 1 FROM outbox_event WHERE id = ANY(:ids) AND status <> 'delivered' LIMIT 1"),
                    {"ids": entry["tasks"]}).first()
            target = entry["fault"].split()[-1]
            if not self.deployment[target].ready():
                return False
            if target == "outbox":
                return not conn.execute(sa.text(
                    "SELECT 1 FROM outbox_event WHERE status = 'pending' "
                    "AND available_at < now() - interval '1 second' LIMIT 1")).first()
            if target == "webhook":
                stored = conn.execute(sa.text("SELECT count(*) FROM webhook_delivery WHERE processed_at IS NULL "
                                              "AND received_at < :at"), {"at": _utc(entry["at"])}).scalar()
                return stored == 0 and self.sandbox.api("stats")["webhooks"]["retrying"] == 0
            return True  # API_GATEWAY: answering again

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for entry in list(self.pending):
                try:
                    if self._done(entry):
                        self.pending.remove(entry)
                        self.resumed.append({"fault": entry["fault"],
                                             "seconds": round(time.time() - entry["at"], 2),
                                             **({"messages_held": len(entry["held"])} if "held" in entry else {}),
                                             **({"tasks_lost": len(entry["tasks"])} if "tasks" in entry else {})})
                except Exception:  # a process or Redis down mid-sample: look again next time
                    continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def send_rate(engine, campaign_id: str) -> float:
    with engine.connect() as conn:
        count, first, last = conn.execute(sa.text(
            "SELECT count(*), min(sent_at), max(sent_at) FROM message_log "
            "WHERE campaign_id = :c AND sent_at IS NOT NULL"), {"c": uuid.UUID(campaign_id)}).one()
    return count / max((last - first).total_seconds(), 1e-9)


def throttled(sandbox: Sandbox) -> int:
    """130429s the sandbox answered so far (a number's throughput exceeded: the sender then slows that number)."""
    return int(sandbox.api("errors")["throughput_exceeded"])


def run_calm(deployment, sandbox, engine, vendor, recipients: int) -> dict:
    throttled_before = throttled(sandbox)
    started = time.monotonic()
    campaign_id = launch_campaign(deployment, vendor, CALM, f"Calm {uuid.uuid4().hex[:6]}")
    eventually(lambda: campaign_stats(deployment, vendor, campaign_id)["status"], lambda s: s == "COMPLETED",
               "the calm campaign", 900, pause=0.5)
    elapsed = time.monotonic() - started
    wait_until_quiet(deployment, sandbox, engine, timeout=300)
    result = verdict(deployment, sandbox, engine, vendor, campaign_id, CALM, recipients)
    return {"launch_to_completed_s": round(elapsed, 1), "msg_per_s": round(send_rate(engine, campaign_id), 1),
            "throttled_130429": throttled(sandbox) - throttled_before, "duplicate_sends": result.duplicate_sends,
            "problems": result.problems(allow_unprevented_duplicates=False)}


def run_chaos(deployment, sandbox, engine, vendor, recipients: int, seed: int) -> dict:
    faults = chaos_schedule(seed, gap=(0.5, 1.0))
    throttled_before = throttled(sandbox)
    watch = Watch(engine, sandbox, deployment)
    started = time.monotonic()
    campaign_id = launch_campaign(deployment, vendor, CHAOS, f"Chaos {uuid.uuid4().hex[:6]}")
    log = run_faults(deployment, faults, started, REDIS_URL, after=watch.fault)
    last_restart = log.last_restart
    eventually(lambda: campaign_stats(deployment, vendor, campaign_id)["status"], lambda s: s == "COMPLETED",
               "the chaos campaign", 900, pause=0.5)
    completed_after_restart = time.time() - last_restart
    elapsed = time.monotonic() - started
    wait_until_quiet(deployment, sandbox, engine, timeout=300)
    eventually(lambda: len(watch.pending), lambda n: n == 0, "every fault's damage to be repaired", 120)
    watch.stop()
    (deployment.directory / "watch.json").write_text(json.dumps(watch.log, default=str, indent=1))

    result = verdict(deployment, sandbox, engine, vendor, campaign_id, CHAOS, recipients)
    blame = duplicates_per_kill(sandbox, engine, campaign_id, CHAOS, log)
    return {"schedule": [(round(f.at, 2), f.action, f.target) for _, f in log.done],
            "launch_to_completed_s": round(elapsed, 1),
            "completed_after_last_restart_s": round(completed_after_restart, 1),
            "msg_per_s": round(send_rate(engine, campaign_id), 1),
            "throttled_130429": throttled(sandbox) - throttled_before,
            "duplicate_sends": result.duplicate_sends, "duplicates_by_kill": dict(blame),
            "preventable_duplicates": len(result.preventable_duplicates),
            "kloyst_counted_duplicates": result.kloyst_duplicate_sends, "taken_back": result.taken_back,
            "resumed": watch.resumed, "problems": result.problems(allow_unprevented_duplicates=True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--runs", type=int, default=1, help="calm and chaos campaigns, alternated")
    args = parser.parse_args()

    database_url = testing.create_database(DATABASE)
    redis.Redis.from_url(REDIS_URL).flushdb()
    directory = Path(tempfile.mkdtemp(prefix="kloyst-bench-chaos-"))
    sandbox_port = free_port()
    deployment = Deployment.from_settings(directory, deployment_settings(
        database_url, REDIS_URL, f"http://127.0.0.1:{sandbox_port}", **{"campaigns.chunk_size": "2000",
                                                                        "kloyst.log.level": "WARNING"}))
    for name, mode in SERVICES:
        deployment.add(name, mode)
    sandbox = Sandbox(deployment.ini, directory / "sandbox.log", numbers={CALM: 1000, CHAOS: 1000}, waba=WABA,
                      port=sandbox_port, latency_ms=args.latency_ms, webhook_url=deployment.webhook_url,
                      retry_max_interval=2.0)
    registry = None
    results: dict[str, list] = {"calm": [], "chaos": []}
    try:
        for command in (("db", "upgrade"), ("pricing", "load-card", "--development")):
            finished = deployment.cli(*command)
            if finished.returncode:
                sys.exit(finished.stdout + finished.stderr)
        sandbox.start()
        deployment.start()
        registry = registry_for(deployment)
        engine = registry["kloyst.engine"]
        vendor = arrange_vendor(deployment, registry, args.recipients, name="Bench Co")
        for run in range(args.runs):
            calm = run_calm(deployment, sandbox, engine, vendor, args.recipients)
            print(f"calm {run + 1}: {json.dumps(calm)}", flush=True)
            results["calm"].append(calm)
            chaos = run_chaos(deployment, sandbox, engine, vendor, args.recipients, args.seed + run)
            print(f"chaos {run + 1}: {json.dumps(chaos)}", flush=True)
            results["chaos"].append(chaos)
        summary = {
            "recipients": args.recipients, "latency_ms": args.latency_ms, "runs": args.runs,
            "calm_msg_per_s_median": statistics.median(r["msg_per_s"] for r in results["calm"]),
            "chaos_msg_per_s_median": statistics.median(r["msg_per_s"] for r in results["chaos"]),
            "chaos_duplicates": [r["duplicate_sends"] for r in results["chaos"]],
            "problems": [p for group in results.values() for r in group for p in r["problems"]]}
        print(json.dumps(summary, indent=2))
        print(f"logs: {directory}")
        return 1 if summary["problems"] else 0
    finally:
        deployment.stop()
        sandbox.stop()
        if registry is not None:
            registry["kloyst.engine"].dispose()
        if not os.environ.get("KLOYST_CHAOS_KEEP"):  # set it to keep the database for a post-mortem
            testing.drop_database(DATABASE)


if __name__ == "__main__":
    sys.exit(main())
