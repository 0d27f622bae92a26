"""Benchmark: outgoing webhook deliveries from one worker process to a local receiver, on PostgreSQL.

    .venv/bin/python bench/vendor_webhooks.py [--events 20000] [--vendors 8] [--receivers 1] [--concurrency 64]

Loads ``--events`` pending deliveries (feed rows and deliveries, spread over ``--vendors``
vendors with one endpoint each) into its own database (``kloyst_bench_vendor_webhooks``), then
runs the deliverer — the same object ``kloyst run`` starts in a WORKER process
(``kloyst_plugins.vendor_webhooks.deliverer.Deliverer``, with the plugin's default settings:
64 threads unless ``--concurrency``, 16 calls per endpoint, one pooled urllib3 client) — in this process until
every delivery is DELIVERED. The receiver runs in ``--receivers`` processes of its own
(asyncio, keep-alive, SO_REUSEPORT), and checks every signature with the
plugin's ``verify_signature``, as a vendor's would. Prints deliveries/s (first claim to last
outcome recorded), the receiver's count of verified requests, and the CPU seconds this
process spent per delivery.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import sqlalchemy as sa

sys.path.insert(0, ".")

from kloyst import make_configurator, testing  # noqa: E402
from kloyst.accounts.models import Vendor  # noqa: E402
from kloyst.db import migrate, session_scope, tenancy  # noqa: E402
from kloyst.testing.processes import free_port  # noqa: E402
from kloyst_plugins.vendor_webhooks.deliverer import Deliverer  # noqa: E402
from kloyst_plugins.vendor_webhooks.services import EndpointService  # noqa: E402

DATABASE = "kloyst_bench_vendor_webhooks"

RECEIVER = r"""
import asyncio, json, os, sys
from kloyst_plugins.vendor_webhooks.api import verify_signature

secrets = {path.encode(): secret for path, secret in json.loads(os.environ["BENCH_SECRETS"]).items()}
counts = {"ok": 0, "bad": 0}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"

async def serve(reader, writer):
    # Just enough HTTP/1.1 for a keep-alive POST: the bench measures the deliverer, not this parser.
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            headers = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
            length = int(headers.get(b"Content-Length", b"0"))
            body = await reader.readexactly(length) if length else b""
            if method == b"GET":
                payload = json.dumps(counts).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
                continue
            try:
                verify_signature(secrets[path], headers.get(b"Kloyst-Signature", b"").decode(), body)
                counts["ok"] += 1
                writer.write(OK)
            except Exception:
                counts["bad"] += 1
                writer.write(BAD)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), reuse_port=True, backlog=1024)
    await server.serve_forever()

asyncio.run(main())
"""


def load(registry, vendors: int, events: int, port: int) -> dict[str, str]:
    """Vendors, one endpoint each (at /v<n> on the receiver), and ``events`` feed rows with a pending delivery."""
    secrets = {}
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        for n in range(vendors):
            vendor = Vendor(name=f"Bench {n}")
            db.add(vendor)
            db.flush()
            service = EndpointService(db, vendor_id=vendor.id, cipher=registry["kloyst.cipher"],
                                      settings=registry.settings)
            _, secret = service.create(url=f"http://127.0.0.1:{port}/v{n}", event_types=["*"], description="",
                                       enabled=True)
            secrets[f"/v{n}"] = secret
    per_vendor = events // vendors
    with registry["kloyst.engine"].begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO vendor_event (vendor_id, seq, event_id, type, occurred_at, payload, created_at)
            SELECT e.vendor_id, g, g, 'ContactCreated', now(),
                   jsonb_build_object('contact_id', gen_random_uuid()::text, 'source', 'api'), now()
              FROM vendor_webhook_endpoint e, generate_series(1, :n) AS g"""), {"n": per_vendor})
        conn.execute(sa.text("""
            INSERT INTO vendor_webhook_delivery (id, vendor_id, endpoint_id, event_row_id, status, attempts,
                                                 window_started_at, next_attempt_at, created_at, updated_at)
            SELECT gen_random_uuid(), v.vendor_id, e.id, v.id, 'PENDING', 0, now(), now(), now(), now()
              FROM vendor_event v JOIN vendor_webhook_endpoint e ON e.vendor_id = v.vendor_id"""))
        conn.execute(sa.text("ANALYZE vendor_webhook_delivery"))
    return secrets


def delivered(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM vendor_webhook_delivery WHERE status = 'DELIVERED'"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--vendors", type=int, default=8)
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64, help="vendor_webhooks.concurrency (threads)")
    args = parser.parse_args()
    url = testing.create_database(DATABASE)
    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": "",
                "kloyst.log.dir": "var/bench-log", "vendor_webhooks.allow_http": "true",
                "vendor_webhooks.allow_loopback": "true", "vendor_webhooks.concurrency": str(args.concurrency)}
    registry = make_configurator({"here": "."}, settings, environ={}).registry
    receivers: list[subprocess.Popen] = []
    try:
        migrate.upgrade(registry["kloyst.plugin_manager"], registry["kloyst.engine"])
        port = free_port()
        secrets = load(registry, args.vendors, args.events, port)
        total = args.events // args.vendors * args.vendors
        env = {**os.environ, "BENCH_SECRETS": json.dumps(secrets)}
        receivers = [subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)], env=env)
                     for _ in range(args.receivers)]
        time.sleep(1.0)
        engine = registry["kloyst.engine"]
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        deliverer = Deliverer(registry).start()
        done = 0
        while done < total:
            time.sleep(0.2)
            done = delivered(engine)
            if time.monotonic() - started > 600:
                raise SystemExit(f"only {done} of {total} delivered after 600 s")
        elapsed = time.monotonic() - started
        deliverer.stop(10)
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        import urllib.request
        counts = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read())
        print(f"delivered {total} events to {args.vendors} endpoints in {elapsed:.2f} s: "
              f"{total / elapsed:,.0f} events/s from one process")
        print(f"receiver ({args.receivers} process(es)) verified {counts['ok']} signatures, refused {counts['bad']} "
              "(one receiver process's own count when there are several)")
        print(f"deliverer CPU: {cpu:.1f} s, {cpu / total * 1e6:.0f} µs per delivery; stats {deliverer.stats}")
    finally:
        for process in receivers:
            process.terminate()
            process.wait(timeout=10)
        registry["kloyst.engine"].dispose()
        testing.drop_database(DATABASE)


if __name__ == "__main__":
    main()
