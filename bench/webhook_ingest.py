"""Benchmark: signed status callbacks into ``SERVICE_TYPE=WEBHOOK`` (waitress → group commit → drainer, PostgreSQL).

    .venv/bin/python bench/webhook_ingest.py [--seconds 20] [--connections 32] [--processes 2] [--messages 40000]
                                             [--servers 2] [--http-threads N] [--inbound [--customers 2000]]

``--inbound`` sends customers' inbound text messages instead of statuses (one message per POST, from
``--customers`` distinct numbers in turn: the first message of each creates its contact, the later ones
find it) and waits until every accepted one is a stored, queryable
``inbound_message`` row: the figure is inbound messages/s from the first POST to the last row stored.

Seeds one vendor with a number and ``--messages`` SENT messages (its own database,
``kloyst_bench_webhook``), starts ``kloyst run`` in WEBHOOK mode as ``--servers``
subprocesses sharing one port (``REUSE_PORT``) against it, and fires Meta-shaped status
callbacks — one status per POST, signed with the app secret, ``sent`` → ``delivered`` →
``read`` for each message in turn — from ``--connections`` keep-alive connections spread
over ``--processes`` client processes, for ``--seconds``. Prints the accepted callbacks per
second, the p50/p99 latency of a callback as the clients saw it, and checks the receiver's
promise: every callback answered 200 is already a committed ``webhook_delivery`` row when
the load ends. Then it waits until every accepted callback was applied (processed, its
status event recorded and its message moved) and says how long after the load that took.
Load generator, servers and PostgreSQL share the machine: on 2 cores the figures are a floor.
The servers run the code ``PYTHONPATH`` points at, like this script (a ``git worktree`` of
another commit, to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import redis as redis_lib
import sqlalchemy as sa

sys.path.insert(0, ".")

from kloyst import testing  # noqa: E402
from kloyst.db import make_engine, migrate  # noqa: E402
from kloyst.plugins import build_plugin_manager  # noqa: E402
from kloyst.webhooks import WEBHOOK_PATH  # noqa: E402

DATABASE = "kloyst_bench_webhook"
KLOYST = str(Path(sys.executable).with_name("kloyst"))
APP_SECRET = "bench-only-app-secret"
WABA_ID, NUMBER_ID = "190000000000001", "190000000000002"
STATUSES = ("sent", "delivered", "read")

INI = """[app:main]
use = egg:kloyst
kloyst.database.url = {database}
kloyst.redis.url = {redis}
kloyst.queue.backend = memory
kloyst.jwt.signing_keys = bench-1:{key}
kloyst.crypto.data_keys = bench-data-1:{key}
kloyst.crypto.hash_key = bench-only-hash-key
kloyst.meta.app_secret = {secret}
kloyst.meta.verify_token = bench-verify-token
kloyst.log.dir = {here}/log
kloyst.mail.file_dir = {here}/mail
kloyst.queue.sqlite_path = {here}/queue.sqlite
kloyst.log.console = false
"""


def seed(engine, messages: int) -> None:
    """One vendor with the messaging plugins on, its WABA, one number and ``messages`` SENT messages."""
    vendor = uuid.uuid4()
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO vendor (id, name, status) VALUES (:v, 'Bench', 'active')"), {"v": vendor})
        for plugin in ("contacts", "waba", "templates", "messages"):
            c.execute(sa.text("INSERT INTO vendor_plugin (id, vendor_id, plugin, enabled_at, settings) "
                              "VALUES (:id, :v, :p, now(), '{}')"), {"id": uuid.uuid4(), "v": vendor, "p": plugin})
        waba = uuid.uuid4()
        c.execute(sa.text("INSERT INTO waba (id, vendor_id, meta_waba_id, name, access_token_enc, enc_kid) "
                          "VALUES (:id, :v, :meta, 'Bench WABA', '\\x00', 'bench')"),
                  {"id": waba, "v": vendor, "meta": WABA_ID})
        number = uuid.uuid4()
        c.execute(sa.text("INSERT INTO phone_number (id, vendor_id, waba_id, meta_phone_number_id, "
                          "display_phone_number, verified_name, quality_rating, throughput_mps, status) "
                          "VALUES (:id, :v, :w, :meta, '+1 555 010 0000', '', 'GREEN', 1000, 'CONNECTED')"),
                  {"id": number, "v": vendor, "w": waba, "meta": NUMBER_ID})
        c.execute(sa.text("""
            INSERT INTO message_log (id, vendor_id, phone_number_id, recipient_hash, content_enc, enc_kid, status,
                                     status_rank, next_attempt_at, attempts, retry_count, wamid, sent_at)
            SELECT gen_random_uuid(), :v, :n, '\\x00', '\\x00', 'bench', 'SENT', 2, now(), 1, 0,
                   'wamid.bench.' || g, now()
              FROM generate_series(1, :count) AS g
        """), {"v": vendor, "n": number, "count": messages})
        c.execute(sa.text("ANALYZE message_log"))


def customer_number(index: int) -> str:
    """The ``index``-th customer of the inbound mode: valid US numbers, digits only as Meta sends them."""
    return f"1202555{index % 10_000:04d}" if index < 10_000 else f"1303555{index % 10_000:04d}"


def request_bytes(port: int, wamid: str, status: str, at: int, inbound_from: str | None = None) -> bytes:
    if inbound_from is None:
        value = {"statuses": [{"id": wamid, "status": status, "timestamp": str(at), "recipient_id": "12025550123",
                               "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility",
                                           "type": "regular"}}]}
    else:
        value = {"contacts": [{"profile": {"name": "Bench Customer"}, "wa_id": inbound_from}],
                 "messages": [{"from": inbound_from, "id": wamid, "timestamp": str(at), "type": "text",
                               "text": {"body": "Hello, is my order on its way?"}}]}
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000", "phone_number_id": NUMBER_ID}, **value}}]}]},
        separators=(",", ":")).encode()
    signature = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = (f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-Hub-Signature-256: sha256={signature}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _connection(requests: list[list[bytes]], port: int, deadline: float, latencies: list,
                      counts: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for message in requests:
            for request in message:
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - started) * 1000)
                counts["accepted" if head.startswith(b"HTTP/1.1 200") else "refused"] += 1
            counts["complete"] += 1
    finally:
        writer.close()


def client_process(port: int, slices: list[list[int]], seconds: float, start_at: float,
                   customers: int = 0) -> tuple:
    """One load process: a keep-alive connection per slice of messages, until ``seconds`` have passed.

    Requests are built and signed before the load starts, so the clients' CPU goes to sending. With
    ``customers``, each index is one inbound message from customer ``index % customers``.
    """
    latencies: list[float] = []
    counts = {"accepted": 0, "refused": 0, "complete": 0}
    at = int(time.time())
    if customers:
        requests = [[[request_bytes(port, f"wamid.inbound.{index}", "", at, customer_number(index % customers))]
                     for index in s] for s in slices]
    else:
        requests = [[[request_bytes(port, f"wamid.bench.{index}", status, at) for status in STATUSES]
                     for index in s] for s in slices]
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + seconds

    async def run() -> None:
        await asyncio.gather(*(_connection(r, port, deadline, latencies, counts) for r in requests))

    asyncio.run(run())
    return latencies, counts


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"kloyst exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"kloyst did not answer /healthz:\n{log.read_text()}")


def inbound_verdict(engine, accepted: int, started: float, stored_at_end: int, timeout: float) -> int:
    """Wait until every accepted inbound message is a stored ``inbound_message`` row; print the ingest rate."""
    while True:
        with engine.connect() as c:
            stored, last = c.execute(sa.text("SELECT count(*), max(received_at) FROM inbound_message")).one()
        if stored >= accepted:
            break
        if time.time() - started > timeout:
            sys.exit(f"not stored after {timeout:g} s: {stored:,} of {accepted:,} inbound messages")
        time.sleep(0.05)
    elapsed = last.timestamp() - started
    with engine.connect() as c:
        contacts = c.execute(sa.text("SELECT count(*) FROM contact")).scalar()
    print(f"inbound: {stored:,} messages stored ({contacts:,} contacts) {elapsed:.2f} s after the first POST "
          f"= {stored / elapsed:,.0f} messages/s through WEBHOOK to a stored, queryable message")
    if stored_at_end < accepted:
        print("MISMATCH: some callbacks were answered 200 before they were committed")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--http-threads", type=int, default=None,
                        help="WEBHOOK_HTTP_THREADS of the servers (default: 16)")
    parser.add_argument("--servers", type=int, default=1, help="WEBHOOK processes sharing the port (REUSE_PORT)")
    parser.add_argument("--inbound", action="store_true", help="customers' inbound messages instead of statuses")
    parser.add_argument("--customers", type=int, default=2_000, help="distinct senders of the inbound mode")
    parser.add_argument("--apply-timeout", type=float, default=300, help="give up waiting after this many seconds")
    args = parser.parse_args()

    url = testing.create_database(DATABASE)
    engine = make_engine(url)
    migrate.upgrade(build_plugin_manager(), engine)
    seed(engine, 0 if args.inbound else args.messages)
    redis = redis_lib.Redis.from_url(args.redis_url)
    redis.flushdb()

    here = Path(tempfile.mkdtemp(prefix="kloyst-bench-webhook-"))
    ini = here / "bench.ini"
    ini.write_text(INI.format(database=url, redis=args.redis_url, key="A" * 43, secret=APP_SECRET, here=here))
    port = free_port()
    log = here / "kloyst.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "SERVICE_TYPE": "WEBHOOK",
           "WEBHOOK_PORT": str(port)}
    if "PYTHONPATH" in os.environ:  # the servers run the same code as this script
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if args.http_threads:
        env["WEBHOOK_HTTP_THREADS"] = str(args.http_threads)
    if args.servers > 1:
        env["REUSE_PORT"] = "true"
    with open(log, "w") as output:
        servers = [subprocess.Popen([KLOYST, "run", str(ini)], env=env, stdout=output, stderr=subprocess.STDOUT)
                   for _ in range(args.servers)]
    server = servers[0]
    try:
        wait_for_health(port, server, log)
        # Each connection walks its own messages: sent, delivered, read for one, then the next.
        indexes = list(range(1, args.messages + 1))
        slices = [indexes[i::args.connections] for i in range(args.connections)]
        per_process = [slices[p::args.processes] for p in range(args.processes)]
        start_at = time.time() + 5.0  # after every client built its requests
        cpu_before = sum(cpu_seconds(p.pid) for p in servers)
        with mp.get_context("spawn").Pool(args.processes) as pool:
            results = pool.starmap(client_process, [(port, s, args.seconds, start_at,
                                                     args.customers if args.inbound else 0) for s in per_process])
        load_ended = time.perf_counter()
        server_cpu = sum(cpu_seconds(p.pid) for p in servers) - cpu_before

        def pending() -> tuple[int, int]:
            with engine.connect() as c:
                stored, unprocessed = c.execute(sa.text(
                    "SELECT count(*), count(*) FILTER (WHERE processed_at IS NULL) FROM webhook_delivery")).one()
            return stored, unprocessed

        stored_at_end, _ = pending()  # every body is distinct: one row per 200, committed before it was sent
        latencies = sorted(ms for result, _ in results for ms in result)
        accepted = sum(counts["accepted"] for _, counts in results)
        refused = sum(counts["refused"] for _, counts in results)
        complete = sum(counts["complete"] for _, counts in results)
        print(f"load: {args.seconds:g} s, {args.connections} keep-alive connections in {args.processes} processes")
        print(f"accepted: {accepted:,} callbacks = {accepted / args.seconds:,.0f} callbacks/s ({refused} refused)")
        print(f"latency: p50 {statistics.median(latencies):.1f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99)]:.1f} ms, max {latencies[-1]:.1f} ms")
        print(f"server process{'es' if len(servers) > 1 else ''} CPU: {server_cpu / args.seconds:.0%} of a core, "
              f"{server_cpu / max(accepted, 1) * 1000:.3f} ms per callback (HTTP and drainer)", flush=True)

        print(f"stored when the load ended: {stored_at_end:,} deliveries "
              f"({'every' if stored_at_end >= accepted else 'NOT every'} accepted callback)", flush=True)
        if args.inbound:
            return inbound_verdict(engine, accepted, start_at, stored_at_end, args.apply_timeout)
        while True:
            stored, unprocessed = pending()
            if stored >= accepted and unprocessed == 0:
                break
            if time.perf_counter() - load_ended > args.apply_timeout:
                sys.exit(f"not applied after {args.apply_timeout:g} s: stored {stored}, unprocessed {unprocessed}")
            time.sleep(0.05)
        applied_after = time.perf_counter() - load_ended
        with engine.connect() as c:
            by_status = dict(c.execute(sa.text("SELECT status, count(*) FROM message_log GROUP BY status")).all())
            events = c.execute(sa.text("SELECT count(*) FROM message_status_event")).scalar()

        print(f"all applied {applied_after:.2f} s after the load ended "
              f"({stored:,} deliveries stored, {events:,} status events)")
        print(f"messages: {by_status} ({complete:,} had all three statuses accepted; READ should be at least that)")
        if stored_at_end < accepted:
            print("MISMATCH: some callbacks were answered 200 before they were committed")
            return 1
        if by_status.get("READ", 0) < complete or events < accepted:
            print("MISMATCH: some accepted callbacks were not applied")
            return 1
        return 0
    finally:
        for process in servers:
            process.send_signal(signal.SIGTERM)
        for process in servers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        engine.dispose()
        testing.drop_database(DATABASE)


if __name__ == "__main__":
    sys.exit(main())
