"""Benchmark: campaigns — (a) fan-out of a million recipients, (b) a campaign sent through the sandbox.

    .venv/bin/python bench/campaign_send.py fanout [--recipients 1000000] [--processes 2] [--chunk 10000]
    .venv/bin/python bench/campaign_send.py send [--recipients 100000] [--latency-ms 100] [--tier 1000]
                                                 [--workers 1] [--concurrency 256]

**fanout** makes a vendor with ``--recipients`` contacts (COPY, encrypted as the contacts plugin
stores them), quotes and launches a campaign over all of them (the launch freezes the audience:
``INSERT … SELECT`` with each recipient's price), then runs the launch's fan-out chunks in
``--processes`` processes — each one what a WORKER does with a ``campaigns.fan_out_chunk``
task: read a chunk of recipients, decrypt, render, seal, ``COPY`` into ``message_log``, mark the
chunk done. Prints the launch's time and the fan-out's (seconds and rows/s).

**send** starts the Meta sandbox in its own process (``--latency-ms``, one number of ``--tier``
mps) and ``--workers`` worker processes running everything a WORKER runs for campaigns (the
sender, the campaign loop and the fan-out tasks through the outbox relay), launches a campaign
of ``--recipients`` and measures launch → last SENT (seconds, msg/s); halfway through, a second
vendor (its own number) launches a 10-message campaign, and the time until all ten are SENT is
the fairness figure (target < 2 s).

Each mode uses its own database (``kloyst_bench_campaign``) and Redis database 15 (flushed).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa
import transaction

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kloyst import make_configurator, testing  # noqa: E402
from kloyst.db import make_engine, migrate, session_scope, tenancy, utcnow  # noqa: E402
from kloyst.plugins import build_plugin_manager  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/15"
KLOYST = str(Path(sys.executable).with_name("kloyst"))
REPO = Path(__file__).resolve().parents[1]
PLUGINS = ("contacts", "waba", "templates", "messages", "wallet", "pricing", "campaigns")
MAPPING = {"1": {"field": "name", "default": "there"}, "2": {"value": "SALE10"}}
TEMPLATE_BODY = "Hi {{1}}, use code {{2}}."


def settings_for(url: str, graph_url: str = "http://127.0.0.1:9", **extra) -> dict:
    return {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": REDIS_URL,
            "kloyst.meta.graph_url": graph_url, "kloyst.log.dir": "/tmp/kloyst-bench-log",
            "kloyst.log.level": "WARNING", **{k: str(v) for k, v in extra.items()}}


def registry_for(settings: dict):
    return make_configurator({"here": "."}, dict(settings), environ={}).registry


class Vendor:
    def __init__(self, vendor_id, number_id, meta_number_id, waba_meta_id, template_id, template_meta_id):
        self.vendor_id, self.number_id, self.meta_number_id = vendor_id, number_id, meta_number_id
        self.waba_meta_id, self.template_id, self.template_meta_id = waba_meta_id, template_id, template_meta_id


PROMO = ("promo", "POSITIONAL", [{"type": "BODY", "text": TEMPLATE_BODY}])
# The sandbox's demo template (kloyst/sandbox/embedded.py), which every number of its WABA can send.
WELCOME = ("welcome", "NAMED", [{"type": "BODY", "text": "Hello {{first_name}}! Reply STOP to opt out."}])
WELCOME_MAPPING = {"first_name": {"field": "name", "default": "there"}}


def arrange_vendor(registry, name: str, meta_number_id: str, waba_meta_id: str, tier: int,
                   template_spec=PROMO) -> Vendor:
    from kloyst.accounts.models import Vendor as VendorRow
    from kloyst.plugins.models import VendorPlugin
    from kloyst_plugins.templates.models import MessageTemplate
    from kloyst_plugins.templates.services import set_components
    from kloyst_plugins.waba.access import encrypt_waba_token
    from kloyst_plugins.waba.models import PhoneNumber, Waba

    engine, cipher = registry["kloyst.engine"], registry["kloyst.cipher"]
    vendor_id, waba_id, number_id, template_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    token, kid = encrypt_waba_token(cipher, vendor_id, "bench-token")
    template_name, parameter_format, components = template_spec
    template = MessageTemplate(id=template_id, vendor_id=vendor_id, meta_waba_id=waba_meta_id,
                               meta_template_id=str(int(meta_number_id) + 7), name=template_name, language="en_US",
                               category="MARKETING", status="APPROVED", parameter_format=parameter_format,
                               variable_mapping={})
    set_components(template, components)
    with engine.begin() as c:
        c.execute(sa.insert(VendorRow.__table__).values(id=vendor_id, name=name))
        c.execute(sa.insert(VendorPlugin.__table__), [{"id": uuid.uuid4(), "vendor_id": vendor_id, "plugin": p}
                                                      for p in PLUGINS])
        c.execute(sa.insert(Waba.__table__).values(id=waba_id, vendor_id=vendor_id, meta_waba_id=waba_meta_id,
                                                   name=name, access_token_enc=token, enc_kid=kid))
        c.execute(sa.insert(PhoneNumber.__table__).values(
            id=number_id, vendor_id=vendor_id, meta_phone_number_id=meta_number_id, waba_id=waba_id,
            display_phone_number=meta_number_id, throughput_mps=tier))
        c.execute(sa.insert(MessageTemplate.__table__).values(
            id=template_id, vendor_id=vendor_id, meta_waba_id=waba_meta_id,
            meta_template_id=template.meta_template_id, name=template_name, language="en_US", category="MARKETING",
            status="APPROVED", parameter_format=parameter_format, components=template.components,
            header_variables=template.header_variables, body_variables=template.body_variables,
            variable_mapping={}))
    return Vendor(vendor_id, number_id, meta_number_id, waba_meta_id, template_id, template.meta_template_id)


def arrange_contacts(registry, vendor_id: uuid.UUID, count: int, *, first: int = 0) -> None:
    """``count`` contacts over 30 calling codes' worth of US/GB numbers, by COPY (as an import leaves them)."""
    engine, cipher, hasher = registry["kloyst.engine"], registry["kloyst.cipher"], registry["kloyst.mobile_hasher"]
    kid, now = cipher.active_kid, utcnow().isoformat()
    batch = 100_000
    for start in range(first, first + count, batch):
        lines = []
        for index in range(start, min(first + count, start + batch)):
            e164, country, code = (f"+1{2000000000 + index}", "US", 1) if index % 3 else (
                f"+44{7000000000 + index}", "GB", 44)
            mobile = cipher.encrypt(e164, vendor_id=vendor_id, field="mobile").hex()
            name = cipher.encrypt(f"Customer {index}", vendor_id=vendor_id, field="name").hex()
            lines.append(f"{uuid.uuid4()}\t{vendor_id}\t\\\\x{hasher(vendor_id, e164).hex()}\t\\\\x{mobile}\t"
                         f"\\\\x{name}\t{kid}\t{country}\t{code}\t[]\t{{}}\tf\timport\t{now}\t{now}\n")
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                cursor.copy_expert("COPY contact (id, vendor_id, mobile_hash, mobile_enc, name_enc, enc_kid, country, "
                                   "calling_code, labels, attributes, opted_out, source, created_at, updated_at) "
                                   "FROM STDIN", io.StringIO("".join(lines)))
            raw.commit()
        finally:
            raw.close()
    with engine.begin() as c:
        c.execute(sa.text("ANALYZE contact"))


def fund_and_launch(registry, vendor: Vendor, *, enqueue, mapping=None) -> tuple[uuid.UUID, float, float]:
    """Draft, quote and launch a campaign to every contact; ``(campaign id, quote s, launch s)``."""
    from kloyst_plugins.campaigns import drafts, launch
    from kloyst_plugins.campaigns.schemas import CampaignCreate
    from kloyst_plugins.pricing import snapshots
    from kloyst_plugins.wallet.ledger import Ledger

    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        snapshots.load_development_card(db)
    with session_scope(factory, vendor_id=vendor.vendor_id) as db:
        Ledger(db.connection(), vendor.vendor_id).topup(10**15, idempotency_key=f"bench:{uuid.uuid4()}")
        campaign = drafts.create(db, CampaignCreate(name="Bench", template_id=vendor.template_id,
                                                    phone_number_id=vendor.number_id, audience={"all": True},
                                                    variables=mapping or MAPPING), user_id=None)
        campaign_id = campaign.id
    started = time.perf_counter()
    manager = transaction.TransactionManager(explicit=True)
    queue = registry["kloyst.queue"]
    with session_scope(factory, vendor_id=vendor.vendor_id, manager=manager) as db:
        from kloyst_plugins.campaigns.models import Campaign

        launch.quote(db, registry, db.get(Campaign, campaign_id),
                     enqueue=lambda name, **kw: queue.enqueue(db, manager, name, **kw))
    quoted = time.perf_counter()
    with session_scope(factory, vendor_id=vendor.vendor_id, manager=manager) as db:
        launch.launch(db, registry, campaign_id,
                      enqueue=enqueue or (lambda name, **kw: queue.enqueue(db, manager, name, **kw)))
    return campaign_id, quoted - started, time.perf_counter() - quoted


def _fanout_process(settings: dict, vendor_id: str, campaign_id: str, seq_froms: list[int]) -> int:
    from kloyst_plugins.campaigns.fanout import write_chunk

    registry = registry_for(settings)
    written = 0
    for seq_from in seq_froms:
        with session_scope(registry["kloyst.session_factory"], vendor_id=uuid.UUID(vendor_id)) as db:
            written += write_chunk(db, registry, vendor_id=uuid.UUID(vendor_id), campaign_id=uuid.UUID(campaign_id),
                                   seq_from=seq_from).written
    registry["kloyst.engine"].dispose()
    return written


def bench_fanout(args) -> dict:
    url = testing.create_database("kloyst_bench_campaign")
    engine = make_engine(url)
    migrate.upgrade(build_plugin_manager(), engine)
    settings = settings_for(url, **{"campaigns.chunk_size": args.chunk})
    registry = registry_for(settings)
    t = time.perf_counter()
    vendor = arrange_vendor(registry, "Bench", "100000000000100", "300000000000001", 1000)
    arrange_contacts(registry, vendor.vendor_id, args.recipients)
    print(f"{args.recipients:,} contacts in {time.perf_counter() - t:.1f} s", flush=True)
    chunks: list[int] = []
    campaign_id, quote_s, launch_s = fund_and_launch(
        registry, vendor, enqueue=lambda name, **kw: chunks.append(kw["seq_from"]))
    print(f"quote {quote_s:.2f} s; launch (freeze + prices + hold + chunks) {launch_s:.2f} s", flush=True)
    shares = [chunks[i::args.processes] for i in range(args.processes)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        written = sum(pool.starmap(_fanout_process, [(settings, str(vendor.vendor_id), str(campaign_id), share)
                                                     for share in shares]))
    elapsed = time.perf_counter() - started
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT count(*) FROM message_log WHERE campaign_id = :c"),
                         {"c": campaign_id}).scalar()
    registry["kloyst.engine"].dispose()
    engine.dispose()
    return {"mode": "fanout", "recipients": args.recipients, "processes": args.processes, "chunk": args.chunk,
            "quote_seconds": round(quote_s, 2), "launch_seconds": round(launch_s, 2),
            "fanout_seconds": round(elapsed, 2), "rows_per_second": round(written / elapsed),
            "messages_in_db": rows, "chunks": len(chunks)}


def start_sandbox(numbers: list[tuple[str, int]], latency_ms: float, waba: str) -> tuple[subprocess.Popen, str]:
    args = [KLOYST, "sandbox", str(REPO / "development.ini"), "--port", "0", "--latency-ms", str(latency_ms),
            "--waba", waba]
    for number, tier in numbers:
        args += ["--number", f"{number}:{tier}"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO)
    return process, json.loads(process.stdout.readline())["url"]


def _service(settings_json: str, mode: str) -> int:
    """A WORKER (huey consumer, sender, campaign loop) or OUTBOX (relay) process, until SIGTERM."""
    from kloyst import runner

    config = make_configurator({"here": "."}, json.loads(settings_json), environ={})
    return runner.run(mode, config.make_wsgi_app(), config.registry)


def _counts(engine, campaign_id) -> dict:
    with engine.connect() as c:
        return dict(c.execute(sa.text("SELECT status, count(*) FROM message_log WHERE campaign_id = :c "
                                      "GROUP BY status"), {"c": campaign_id}).all())


def bench_send(args) -> dict:
    waba = "200000000000009"
    number_a, number_b = "100000000000901", "100000000000902"
    sandbox, graph_url = start_sandbox([(number_a, args.tier), (number_b, args.tier)], args.latency_ms, waba)
    url = testing.create_database("kloyst_bench_campaign")
    engine = make_engine(url)
    migrate.upgrade(build_plugin_manager(), engine)
    settings = settings_for(url, graph_url, **{"kloyst.queue.backend": "redis", "kloyst.queue.immediate": "false",
                                               "messages.sender_concurrency": args.concurrency,
                                               "campaigns.tick_seconds": 0.5})
    registry = registry_for(settings)
    registry["kloyst.redis"].flushdb()
    processes = []
    try:
        big = arrange_vendor(registry, "Big Co", number_a, waba, args.tier, WELCOME)
        small = arrange_vendor(registry, "Small Co", number_b, "200000000000010", args.tier, WELCOME)
        arrange_contacts(registry, big.vendor_id, args.recipients)
        arrange_contacts(registry, small.vendor_id, 10, first=10_000_000)
        for mode in ["OUTBOX"] + ["WORKER"] * args.workers:
            processes.append(subprocess.Popen([sys.executable, __file__, "--service", mode, json.dumps(settings)],
                                              cwd=REPO))
        time.sleep(3)  # the workers connect and start their loops
        launched_at = time.perf_counter()
        big_id, _, launch_s = fund_and_launch(registry, big, enqueue=None, mapping=WELCOME_MAPPING)
        print(f"launched {args.recipients:,} recipients in {launch_s:.2f} s", flush=True)
        small_id = fairness_ms = None
        small_at = None
        while True:
            time.sleep(0.1)
            counts = _counts(engine, big_id)
            done = counts.get("SENT", 0) + counts.get("FAILED", 0)
            if small_id is None and done >= args.recipients // 2:
                small_at = time.perf_counter()
                small_id, _, _ = fund_and_launch(registry, small, enqueue=None, mapping=WELCOME_MAPPING)
            if small_id is not None and fairness_ms is None and _counts(engine, small_id).get("SENT", 0) == 10:
                fairness_ms = round((time.perf_counter() - small_at) * 1000)
                print(f"  second vendor's 10 messages all SENT {fairness_ms} ms after its launch", flush=True)
            if done >= args.recipients and fairness_ms is not None:
                break
            if time.perf_counter() - launched_at > 900:
                raise RuntimeError(f"timed out: {counts}")
        elapsed = time.perf_counter() - launched_at
        with engine.connect() as c:
            first, last = c.execute(sa.text("SELECT min(sent_at), max(sent_at) FROM message_log "
                                            "WHERE campaign_id = :c"), {"c": big_id}).one()
            status = c.execute(sa.text("SELECT status FROM campaign WHERE id = :c"), {"c": big_id}).scalar()
        with urllib.request.urlopen(graph_url + "/_sandbox/stats", timeout=30) as response:
            stats = json.loads(response.read())
        return {"mode": "send", "recipients": args.recipients, "tier_mps": args.tier, "latency_ms": args.latency_ms,
                "workers": args.workers, "concurrency": args.concurrency, "launch_seconds": round(launch_s, 2),
                "launch_to_last_sent_seconds": round(elapsed, 1),
                "msg_per_s": round(counts.get("SENT", 0) / (last - first).total_seconds(), 1),
                "sent": counts.get("SENT", 0), "failed": counts.get("FAILED", 0), "campaign_status": status,
                "fairness_second_vendor_10_sent_ms": fairness_ms,
                "throttled_130429": stats.get("throughput_exceeded")}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        sandbox.terminate()
        sandbox.wait(timeout=10)
        registry["kloyst.engine"].dispose()
        engine.dispose()


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--service":
        return _service(sys.argv[3], sys.argv[2])
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    fan = sub.add_parser("fanout")
    fan.add_argument("--recipients", type=int, default=1_000_000)
    fan.add_argument("--processes", type=int, default=2)
    fan.add_argument("--chunk", type=int, default=10_000)
    send = sub.add_parser("send")
    send.add_argument("--recipients", type=int, default=100_000)
    send.add_argument("--latency-ms", type=float, default=100.0)
    send.add_argument("--tier", type=int, default=1000, choices=(80, 1000))
    send.add_argument("--workers", type=int, default=1)
    send.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    result = bench_fanout(args) if args.mode == "fanout" else bench_send(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
