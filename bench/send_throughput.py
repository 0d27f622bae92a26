"""Benchmark: queued messages → SENT through the real sender and the Meta sandbox, with Meta's latency.

    .venv/bin/python bench/send_throughput.py [--messages 50000] [--numbers 1] [--tier 1000]
                                              [--latency-ms 100] [--workers 1] [--concurrency 256]

Queues ``--messages`` template messages spread over ``--numbers`` phone numbers of ``--tier``
messages/s each, starts the Meta sandbox in its own process (``kloyst sandbox``; every Graph answer
waits ``--latency-ms``, throughput enforced per number with 130429) and ``--workers`` sender
processes (the same ``Sender`` a WORKER runs), then waits until every message is terminal.

Prints the messages confirmed SENT per second (``msg/s``: overall, and the median of the
per-second counts by ``sent_at`` once the first second has passed), how many 130429 the sandbox
answered (all, and after the first 5 s, when the limiter has adapted), and the worst one-second
window the sandbox admitted per number. Uses its own database (``kloyst_bench_send``) and Redis
database 15 (flushed).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kloyst import make_configurator, testing  # noqa: E402
from kloyst.db import make_engine, migrate  # noqa: E402
from kloyst.plugins import build_plugin_manager  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/15"
KLOYST = str(Path(sys.executable).with_name("kloyst"))
REPO = Path(__file__).resolve().parents[1]
WABA = "300000000000001"


def settings_for(url: str, graph_url: str, concurrency: int, safety: float) -> dict:
    return {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": REDIS_URL,
            "kloyst.meta.graph_url": graph_url, "messages.sender_concurrency": str(concurrency),
            "messages.rate_safety": str(safety),
            "kloyst.log.dir": "/tmp/kloyst-bench-log", "kloyst.log.level": "WARNING"}


def worker(settings_json: str) -> int:
    """One sender process, until SIGTERM."""
    from kloyst_plugins.messages.sender import Sender

    registry = make_configurator({"here": "."}, json.loads(settings_json), environ={}).registry
    sender = Sender(registry).start()
    stopping = [False]
    signal.signal(signal.SIGTERM, lambda *_: stopping.__setitem__(0, True))
    while not stopping[0]:
        time.sleep(0.2)
    sender.stop(timeout=20)
    print(json.dumps({**sender.stats, "cpu_seconds": round(time.process_time(), 1)}), flush=True)
    return 0


def start_sandbox(numbers: list[str], tier: int, latency_ms: float) -> tuple[subprocess.Popen, str]:
    args = [KLOYST, "sandbox", str(REPO / "development.ini"), "--port", "0", "--latency-ms", str(latency_ms),
            "--waba", WABA]
    for number in numbers:
        args += ["--number", f"{number}:{tier}"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO)
    line = process.stdout.readline()
    return process, json.loads(line)["url"]


def sandbox_call(url: str, path: str, body: dict | None = None) -> dict:
    import urllib.request

    request = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def arrange(registry, numbers: list[str], tier: int, messages: int) -> None:
    """The vendor, WABA, numbers and queued messages."""
    from kloyst.meta.payloads import template_payload
    from kloyst_plugins.messages.content import seal_content
    from kloyst_plugins.waba.access import encrypt_waba_token

    engine, cipher, hasher = registry["kloyst.engine"], registry["kloyst.cipher"], registry["kloyst.mobile_hasher"]
    vendor_id, waba_id = uuid.uuid4(), uuid.uuid4()
    number_ids = [uuid.uuid4() for _ in numbers]
    token, kid = encrypt_waba_token(cipher, vendor_id, "bench-token")
    from kloyst.accounts.models import Vendor
    from kloyst.plugins.models import VendorPlugin
    from kloyst_plugins.messages.models import MessageLog
    from kloyst_plugins.waba.models import PhoneNumber, Waba

    with engine.begin() as c:
        c.execute(sa.insert(Vendor.__table__).values(id=vendor_id, name="Bench"))
        c.execute(sa.insert(VendorPlugin.__table__), [{"vendor_id": vendor_id, "plugin": p}
                                                      for p in ("contacts", "waba", "templates", "messages")])
        c.execute(sa.insert(Waba.__table__).values(id=waba_id, vendor_id=vendor_id, meta_waba_id=WABA, name="Bench",
                                                   access_token_enc=token, enc_kid=kid))
        c.execute(sa.insert(PhoneNumber.__table__), [
            {"id": number_id, "vendor_id": vendor_id, "meta_phone_number_id": meta_id, "waba_id": waba_id,
             "display_phone_number": meta_id, "throughput_mps": tier}
            for number_id, meta_id in zip(number_ids, numbers)])
        rows = []
        for index in range(messages):
            message_id = uuid.uuid4()
            to = f"+1{2025550000 + index}"
            # The sandbox's demo template (kloyst/sandbox/embedded.py): "Order {{1}}" / "Hi {{1}}, … on {{2}}."
            payload = template_payload(to, "order_update", "en_US", header=[f"A-{index}"],
                                       body=[f"Customer {index}", "Monday"],
                                       biz_opaque_callback_data=str(message_id))
            content, kid = seal_content(cipher, vendor_id, payload)
            rows.append({"id": message_id, "vendor_id": vendor_id, "phone_number_id": number_ids[index % len(numbers)],
                         "template_name": "order_update", "template_language": "en_US", "category": "UTILITY",
                         "recipient_hash": hasher(vendor_id, to), "content_enc": content, "enc_kid": kid})
        c.execute(sa.insert(MessageLog.__table__), rows)
        c.execute(sa.text("ANALYZE message_log"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def per_second(engine) -> list[int]:
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT date_trunc('second', sent_at) AS s, count(*) FROM message_log "
                                 "WHERE status = 'SENT' GROUP BY s ORDER BY s")).all()
    return [n for _, n in rows]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--numbers", type=int, default=1)
    parser.add_argument("--tier", type=int, default=1000, choices=(80, 1000))
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--rate-safety", type=float, default=0.96, help="SENDER_RATE_SAFETY: pace as share of tier")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)

    numbers = [str(100000000000100 + i) for i in range(args.numbers)]
    sandbox, graph_url = start_sandbox(numbers, args.tier, args.latency_ms)
    url = testing.create_database("kloyst_bench_send")
    engine = make_engine(url)
    migrate.upgrade(build_plugin_manager(), engine)
    settings = settings_for(url, graph_url, args.concurrency, args.rate_safety)
    registry = make_configurator({"here": "."}, dict(settings), environ={}).registry
    registry["kloyst.redis"].flushdb()
    workers = []
    try:
        started = time.perf_counter()
        arrange(registry, numbers, args.tier, args.messages)
        print(f"queued {args.messages:,} messages on {args.numbers} number(s) of {args.tier} mps "
              f"in {time.perf_counter() - started:.1f} s; sandbox latency {args.latency_ms:g} ms", flush=True)
        t0 = time.perf_counter()
        for _ in range(args.workers):
            workers.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(settings)],
                                            stdout=subprocess.PIPE, text=True, cwd=REPO))
        throttled_at_5s = None
        while True:
            time.sleep(1.0)
            with engine.connect() as c:
                counts = dict(c.execute(sa.text("SELECT status, count(*) FROM message_log GROUP BY status")).all())
            elapsed = time.perf_counter() - t0
            done = counts.get("SENT", 0) + counts.get("FAILED", 0)
            print(f"  {elapsed:5.1f} s  {counts}", flush=True)
            if throttled_at_5s is None and elapsed >= 5:
                throttled_at_5s = sandbox_call(graph_url, "/_sandbox/errors")["throughput_exceeded"]
            if done >= args.messages or elapsed > 600:
                break
        elapsed = time.perf_counter() - t0
        sandbox_cpu = cpu_seconds(sandbox.pid)
        stats = sandbox_call(graph_url, "/_sandbox/stats")
        seconds = per_second(engine)
        steady = seconds[1:-1] or seconds
        sends = sandbox_call(graph_url, "/_sandbox/sends")["sends"]
        worst = {}
        by_number = collections.defaultdict(list)
        for send in sends:
            by_number[send["phone_number_id"]].append(send["admitted"])
        worst_at = {}
        for number, times in by_number.items():
            times.sort()
            best, j = 0, 0
            for i, t in enumerate(times):
                while times[j] <= t - 1.0:
                    j += 1
                if i - j + 1 > best:
                    best, worst_at[number] = i - j + 1, round(t - times[0], 2)
            worst[number] = best
        if os.environ.get("BENCH_DUMP_SENDS"):  # admission times, to look at the pacing itself
            Path(os.environ["BENCH_DUMP_SENDS"]).write_text(json.dumps(sorted(s["admitted"] for s in sends)))
        result = {
            "messages": args.messages, "numbers": args.numbers, "tier_mps": args.tier,
            "latency_ms": args.latency_ms, "workers": args.workers, "concurrency": args.concurrency,
            "sent": counts.get("SENT", 0), "failed": counts.get("FAILED", 0),
            "overall_msg_per_s": round(counts.get("SENT", 0) / elapsed, 1),
            "median_msg_per_s": statistics.median(steady) if steady else 0,
            "throttled_130429": stats["throughput_exceeded"],
            "throttled_130429_after_5s": stats["throughput_exceeded"] - (throttled_at_5s or 0),
            "worst_1s_window_per_number": max(worst.values()) if worst else 0,
            "worst_window_ends_after_s": max(worst_at.values()) if worst_at else 0,
            "sandbox_cpu_seconds": sandbox_cpu, "elapsed_seconds": round(elapsed, 1),
            "sandbox_accepted": stats["accepted"], "duplicate_sends_at_sandbox":
                sum(1 for n in stats["by_recipient"].values() if n > 1),
        }
        print(json.dumps(result, indent=2))
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                out, _ = process.communicate(timeout=30)
                print("worker stats:", out.strip())
            except subprocess.TimeoutExpired:
                process.kill()
        sandbox.terminate()
        sandbox.wait(timeout=10)
        registry["kloyst.engine"].dispose()
        engine.dispose()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
