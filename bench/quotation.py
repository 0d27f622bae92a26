"""Benchmark: POST /v1/quotations for a 1,000,000-contact audience over 30 countries, on PostgreSQL.

    .venv/bin/python bench/quotation.py [--contacts 1000000] [--runs 3]

Builds its own database (``kloyst_bench_quotation``) from the migrations, a vendor with
contacts, wallet and pricing enabled, the development rate card and a global fee rule
(10 % markup, a minimum charge), then writes the contacts in one ``INSERT … SELECT
generate_series`` spread over 30 countries (some in the same regional market, so volume
tiers split lines; India takes about a third, so its line crosses a band edge), a label on half of
them and 1 % opted out. It then times the whole
request through the WSGI application (authentication, audience ``GROUP BY``, pricing,
writing the quotation and its items, enqueueing the PDF) for an "all" audience and a
label audience, and reports the median of ``--runs`` in milliseconds, next to the
``count_by_country`` query alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

sys.path.insert(0, ".")

import sqlalchemy as sa  # noqa: E402
import webtest  # noqa: E402

from kloyst import make_configurator, testing  # noqa: E402
from kloyst.db import make_engine, migrate, session_scope, tenancy  # noqa: E402
from kloyst.plugins import build_plugin_manager  # noqa: E402

COUNTRIES = ("IN", "BR", "ID", "US", "GB", "DE", "MX", "NG", "KE", "GH", "ZA", "EG", "TR", "PK", "AR", "CO", "FR",
             "ES", "IT", "AU", "PH", "VN", "PL", "RO", "AE", "SA", "MY", "CL", "PE", "FJ")
DB_NAME = "kloyst_bench_quotation"


def build(url: str, redis_url: str):
    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": redis_url,
                "kloyst.queue.backend": "memory", "kloyst.queue.immediate": "false"}
    config = make_configurator({"here": "."}, settings, environ={})
    return config.make_wsgi_app(), config.registry


def seed(registry, contacts: int):
    from kloyst_plugins.pricing.models import PlatformFeeRule
    from kloyst_plugins.pricing.snapshots import load_development_card

    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        account = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Bench Quotation")
        for plugin in ("contacts", "wallet", "pricing"):
            testing.enable_plugin(db, account.vendor_id, plugin)
        snapshot = load_development_card(db)
        db.add(PlatformFeeRule(currency="USD", markup_micropercent=10_000_000, minimum_charge_micros=5_000_000,
                               valid_from=snapshot.effective_from))
    started = time.monotonic()
    with registry["kloyst.engine"].begin() as connection:
        connection.execute(sa.text("""
            INSERT INTO contact (vendor_id, id, mobile_hash, mobile_enc, enc_kid, country, calling_code, labels,
                                 attributes, opted_out, source, created_at, updated_at)
            SELECT :vendor, gen_random_uuid(), sha256(convert_to('bench-' || i, 'UTF8')), '\\x00'::bytea, 'bench',
                   CASE WHEN i % 3 = 0 THEN 'IN' ELSE (:countries)[1 + (hashint4(i)::bigint % 30 + 30) % 30] END, NULL,
                   CASE WHEN i % 2 = 0 THEN '["vip"]'::jsonb ELSE '[]'::jsonb END, '{}'::jsonb, i % 100 = 0, 'api',
                   now(), now()
            FROM generate_series(1, :n) AS i"""), {"vendor": account.vendor_id, "countries": list(COUNTRIES),
                                                   "n": contacts})
        connection.execute(sa.text("ANALYZE contact"))
    print(f"inserted {contacts:,} contacts over {len(COUNTRIES)} countries in {time.monotonic() - started:.1f} s",
          flush=True)
    return account


def time_quote(app, account, audience: dict, runs: int) -> tuple[float, dict]:
    timings, answer = [], None
    for _ in range(runs):
        started = time.perf_counter()
        answer = app.post_json("/v1/quotations", {"category": "UTILITY", "audience": audience},
                               headers=account.headers, status=201).json["quotation"]
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), answer


def time_count(registry, account, audience: dict, runs: int) -> float:
    from kloyst_plugins.contacts.audience import Audience, count_by_country

    timings = []
    for _ in range(runs):
        with session_scope(registry["kloyst.session_factory"], vendor_id=account.vendor_id) as db:
            started = time.perf_counter()
            count_by_country(db, Audience(**audience), vendor_id=account.vendor_id)
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--keep-db", action="store_true", help=f"leave the {DB_NAME} database (to inspect)")
    args = parser.parse_args()

    url = testing.create_database(DB_NAME)
    try:
        engine = make_engine(url)
        migrate.upgrade(build_plugin_manager(), engine)
        engine.dispose()
        wsgi, registry = build(url, args.redis_url)
        account = seed(registry, args.contacts)
        app = webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "192.0.2.10"})
        for label, audience in (("all", {"all": True}), ("label vip", {"labels_include": ["vip"]})):
            median, answer = time_quote(app, account, audience, args.runs)
            counting = time_count(registry, account, audience, args.runs)
            print(f"POST /v1/quotations, audience {label}: {answer['recipients']:,} recipients, "
                  f"{len({i['country'] for i in answer['items']})} countries, {len(answer['items'])} items, "
                  f"total {answer['total']} {answer['currency']}: median {median:.0f} ms of {args.runs} "
                  f"(count_by_country alone: {counting:.0f} ms)", flush=True)
        registry["kloyst.engine"].dispose()
    finally:
        if not args.keep_db:
            testing.drop_database(DB_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
