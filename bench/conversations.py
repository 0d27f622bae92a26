"""Benchmark: the inbox with 1,000,000 messages for one vendor — conversation list and thread pages, p50/p99.

    .venv/bin/python bench/conversations.py [--messages 1000000] [--contacts 10000] [--whale 100000]
                                            [--samples 300]

Seeds, by COPY on PostgreSQL (database ``kloyst_bench_conversations``, rebuilt each run), one vendor
with ``--contacts`` conversations on one number and ``--messages`` messages split evenly between the
customers' (``inbound_message``) and the vendor's (``message_log``: replies and campaign messages,
all naming their contact), encrypted as the application stores them. One conversation, the
"whale", holds ``--whale`` of them, so a thread page is shown not to depend on the thread's length.
A tenth of the conversations are labelled, a tenth assigned to the signed-in user, a fifth unread,
and a twentieth had a customer message in the last 24 hours.

Then it asks the application itself (the WSGI app in this process: authentication, tenancy,
validation, decryption, JSON) for pages of 50, ``--samples`` times each:

* ``list``: the first page, and every page followed by cursor to the last (three times);
* ``list?unread`` / ``?window_open`` / ``?label`` / ``?assigned_to_me``: the filters;
* ``thread``: a random conversation's first page, newest first, and its oldest-first page;
* ``thread deep``: the whale's pages followed by cursor, 100 deep (5,000 messages), five times.

Prints milliseconds per page (p50, p99, max) per kind, and the overall p99 (target < 50 ms).
Redis database 10 (flushed) serves the rate limiter.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kloyst import make_configurator, testing  # noqa: E402
from kloyst.db import make_engine, migrate, session_scope, tenancy, utcnow  # noqa: E402
from kloyst.plugins import build_plugin_manager  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/10"
PLUGINS = ("contacts", "waba", "templates", "wallet", "pricing", "messages", "media", "conversations")
PAGE = 50
BATCH = 50_000


def settings_for(url: str) -> dict:
    return {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": REDIS_URL,
            "kloyst.log.dir": "/tmp/kloyst-bench-log", "kloyst.log.level": "WARNING",
            "kloyst.queue.sqlite_path": "/tmp/kloyst-bench-conversations-queue.sqlite"}


def copy(engine, table: str, columns: str, lines: list[str]) -> None:
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", io.StringIO("".join(lines)))
        raw.commit()
    finally:
        raw.close()


def hexa(data: bytes) -> str:
    return "\\\\x" + data.hex()


def seed(registry, args) -> dict:
    from kloyst.plugins.models import VendorPlugin
    from kloyst_plugins.messages.content import seal_content
    from kloyst_plugins.messages.webhooks import INBOUND_FIELD
    from kloyst_plugins.waba.access import encrypt_waba_token
    from kloyst_plugins.waba.models import PhoneNumber, Waba

    engine, cipher, hasher = registry["kloyst.engine"], registry["kloyst.cipher"], registry["kloyst.mobile_hasher"]
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        account = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Bench Inbox")
        vendor_id, user_id, token = account.vendor_id, account.user.id, account.token
    waba_id, number_id = uuid.uuid4(), uuid.uuid4()
    token_enc, kid = encrypt_waba_token(cipher, vendor_id, "bench-token")
    with engine.begin() as c:
        c.execute(sa.insert(VendorPlugin.__table__), [{"id": uuid.uuid4(), "vendor_id": vendor_id, "plugin": p}
                                                      for p in PLUGINS])
        c.execute(sa.insert(Waba.__table__).values(id=waba_id, vendor_id=vendor_id, meta_waba_id="410000000000001",
                                                   name="Bench", access_token_enc=token_enc, enc_kid=kid))
        c.execute(sa.insert(PhoneNumber.__table__).values(
            id=number_id, vendor_id=vendor_id, meta_phone_number_id="110000000000001", waba_id=waba_id,
            display_phone_number="+1 555 0100", throughput_mps=80, status="CONNECTED"))

    kid = cipher.active_kid
    now = utcnow()
    contacts = [uuid.uuid4() for _ in range(args.contacts)]
    numbers = [f"+1{2000000000 + i}" for i in range(args.contacts)]
    lines = []
    for contact_id, e164 in zip(contacts, numbers):
        lines.append(f"{contact_id}\t{vendor_id}\t{hexa(hasher(vendor_id, e164))}\t"
                     f"{hexa(cipher.encrypt(e164, vendor_id=vendor_id, field='mobile'))}\t{kid}\tUS\t1\t[]\t{{}}\tf\t"
                     f"webhook\t{now.isoformat()}\t{now.isoformat()}\n")
    copy(engine, "contact", "id, vendor_id, mobile_hash, mobile_enc, enc_kid, country, calling_code, labels, "
                            "attributes, opted_out, source, created_at, updated_at", lines)

    # One ciphertext per direction and kind: sealing is per vendor and field, not per row, and decrypting a
    # page costs the same whichever bytes it is.
    inbound_enc = hexa(cipher.encrypt(json.dumps({"from": "12025550100", "id": "wamid.x", "timestamp": "0",
                                                  "type": "text", "text": {"body": "Where is my order, please?"}}),
                                      vendor_id=vendor_id, field=INBOUND_FIELD))
    outbound_enc = hexa(seal_content(cipher, vendor_id, {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "+12025550100", "type": "text",
        "text": {"body": "It ships today.", "preview_url": False}})[0])

    whale = contacts[0]
    rest = args.messages - args.whale
    per_contact = max(1, rest // max(1, args.contacts - 1))
    span = dt.timedelta(days=30)
    summary: dict[uuid.UUID, dict] = {}
    inbound_lines: list[str] = []
    outbound_lines: list[str] = []
    written = 0
    started = time.perf_counter()

    def flush() -> None:
        if inbound_lines:
            copy(engine, "inbound_message", "id, vendor_id, wamid, phone_number_id, contact_id, sender_hash, type, "
                                            "content_enc, enc_kid, opt_out, sent_at, received_at", inbound_lines)
            inbound_lines.clear()
        if outbound_lines:
            copy(engine, "message_log", "id, vendor_id, phone_number_id, contact_id, campaign_id, category, "
                                        "recipient_hash, country, content_enc, enc_kid, status, status_rank, "
                                        "next_attempt_at, attempts, retry_count, maybe_sent_before, duplicate_sends, "
                                        "wamid, sent_at, created_at, updated_at", outbound_lines)
            outbound_lines.clear()

    rng = random.Random(17)
    hot = set(rng.sample(contacts[1:], max(1, args.contacts // 20)))  # a customer wrote in the last 24 h
    campaign_id = uuid.uuid4()
    for index, contact_id in enumerate(contacts):
        count = args.whale if contact_id == whale else per_contact
        if index == len(contacts) - 1:
            count = args.messages - written
        sender_hash = hexa(hasher(vendor_id, numbers[index]))
        first = now - span + dt.timedelta(seconds=rng.randrange(0, 3600 * 24 * 20))
        last_end = now - dt.timedelta(minutes=rng.randrange(1, 600)) if contact_id in hot or contact_id == whale \
            else now - dt.timedelta(hours=rng.randrange(30, 240))
        step = (last_end - first) / max(1, count)
        last = {"in": None, "out": None}
        for k in range(count):
            at = first + step * (k + 1)
            message_id = uuid.uuid4()
            if k % 2 == 0 or k == count - 1:
                inbound_lines.append(f"{message_id}\t{vendor_id}\twamid.b.{message_id.hex}\t{number_id}\t{contact_id}\t"
                                     f"{sender_hash}\ttext\t{inbound_enc}\t{kid}\tf\t{at.isoformat()}\t"
                                     f"{at.isoformat()}\n")
                last["in"] = (at, message_id)
            else:
                campaign = campaign_id if k % 10 == 1 else "\\N"
                outbound_lines.append(f"{message_id}\t{vendor_id}\t{number_id}\t{contact_id}\t{campaign}\tservice\t"
                                      f"{sender_hash}\tUS\t{outbound_enc}\t{kid}\tDELIVERED\t3\t{at.isoformat()}\t1\t"
                                      f"0\tf\t0\twamid.o.{message_id.hex}\t{at.isoformat()}\t{at.isoformat()}\t"
                                      f"{at.isoformat()}\n")
                last["out"] = (at, message_id)
            written += 1
            if len(inbound_lines) + len(outbound_lines) >= BATCH:
                flush()
        summary[contact_id] = last
        if index % 2000 == 0:
            print(f"  {written:,} messages ({time.perf_counter() - started:.0f} s)", flush=True)
    flush()

    lines = []
    for index, contact_id in enumerate(contacts):
        last_in, last_out = summary[contact_id]["in"], summary[contact_id]["out"]
        last_at, last_id, direction = max((x for x in (last_in + ("inbound",) if last_in else None,
                                                       last_out + ("outbound",) if last_out else None) if x),
                                          key=lambda x: x[0])
        unread = rng.randrange(1, 9) if index % 5 == 0 else 0
        labels = json.dumps(["vip"] if index % 10 == 0 else [])
        assignee = user_id if index % 10 == 3 else "\\N"
        last_inbound = last_in[0].isoformat() if last_in else "\\N"
        lines.append(f"{uuid.uuid4()}\t{vendor_id}\t{contact_id}\t{number_id}\t{last_at.isoformat()}\t{last_id}\t"
                     f"{direction}\t{last_inbound}\t\\N\t{unread}\t{assignee}\t{labels}\t{now.isoformat()}\t"
                     f"{now.isoformat()}\n")
    copy(engine, "conversation", "id, vendor_id, contact_id, phone_number_id, last_message_at, last_message_id, "
                                 "last_message_direction, last_inbound_at, last_read_at, unread_count, "
                                 "assignee_user_id, labels, created_at, updated_at", lines)
    with engine.begin() as c:
        for table in ("contact", "conversation", "inbound_message", "message_log"):
            c.execute(sa.text(f"ANALYZE {table}"))
        whale_conversation = c.execute(sa.text("SELECT id FROM conversation WHERE contact_id = :c"),
                                       {"c": whale}).scalar()
        conversation_ids = [r[0] for r in c.execute(sa.text("SELECT id FROM conversation"))]
        totals = c.execute(sa.text("SELECT (SELECT count(*) FROM inbound_message), (SELECT count(*) FROM message_log)"
                                   )).one()
    print(f"seeded {totals[0]:,} inbound + {totals[1]:,} outbound messages, {len(contacts):,} conversations in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return {"token": token, "whale": whale_conversation, "conversations": conversation_ids}


def measure(app, seeded: dict, samples: int) -> dict[str, list[float]]:
    import webtest

    client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.77"})
    headers = {"Authorization": f"Bearer {seeded['token']}"}
    timings: dict[str, list[float]] = {}
    rng = random.Random(5)

    def get(kind: str, url: str, **params) -> dict:
        started = time.perf_counter()
        answer = client.get(url, params=params, headers=headers, status=200).json
        timings.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        return answer

    for _ in range(5):  # warm the connection pool and the caches
        get("warm-up", "/v1/conversations", limit=PAGE)
    timings.pop("warm-up")
    for _ in range(samples):
        get("list first page", "/v1/conversations", limit=PAGE)
    for _ in range(3):  # every page of the inbox, by cursor, to the last
        cursor = None
        while True:
            page = get("list by cursor (to the end)", "/v1/conversations", limit=PAGE,
                       **({"cursor": cursor} if cursor else {}))
            cursor = page["next_cursor"]
            if cursor is None:
                break
    for kind, params in (("list ?unread", {"unread": "true"}), ("list ?window_open", {"window_open": "true"}),
                         ("list ?label", {"label": "vip"}), ("list ?assigned_to_me", {"assigned_to_me": "true"})):
        for _ in range(samples):
            get(kind, "/v1/conversations", limit=PAGE, **params)
    for _ in range(samples):
        conversation = rng.choice(seeded["conversations"])
        get("thread first page", f"/v1/conversations/{conversation}/messages", limit=PAGE)
        get("thread oldest first", f"/v1/conversations/{conversation}/messages", limit=PAGE,
            direction="oldest_first")
    for _ in range(5):  # the whale's thread, 100 pages (5,000 messages) deep
        cursor = None
        for _depth in range(100):
            page = get("whale thread by cursor (100 deep)", f"/v1/conversations/{seeded['whale']}/messages",
                       limit=PAGE, **({"cursor": cursor} if cursor else {}))
            cursor = page["next_cursor"]
    return timings


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--whale", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    url = testing.create_database("kloyst_bench_conversations")
    engine = make_engine(url)
    migrate.upgrade(build_plugin_manager(), engine)
    config = make_configurator({"here": "."}, settings_for(url), environ={})
    registry = config.registry
    registry["kloyst.redis"].flushdb()
    seeded = seed(registry, args)
    timings = measure(config.make_wsgi_app(), seeded, args.samples)
    every = [t for values in timings.values() for t in values]
    print(f"\n{'page of ' + str(PAGE):<36}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for kind, values in timings.items():
        print(f"{kind:<36}{len(values):>6}{statistics.median(values):>10.1f}{percentile(values, 0.99):>10.1f}"
              f"{max(values):>10.1f}")
    print(f"{'all pages':<36}{len(every):>6}{statistics.median(every):>10.1f}{percentile(every, 0.99):>10.1f}"
          f"{max(every):>10.1f}")
    registry["kloyst.engine"].dispose()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
