"""Benchmark: a contact import end to end on PostgreSQL with two chunk workers.

    .venv/bin/python bench/import_contacts.py [--rows 1000000] [--xlsx-rows 1000000] [--workers 2]

Generates a CSV of ``--rows`` contacts (numbers of IN, US, GB and BR in national and
international writings, a country column for the national ones, ~10% invalid values),
then for each run: extraction (the upload side's ``extract``), the mapping confirmed by
``mapping.confirm_mapping`` (which writes one outbox event per chunk), and ``--workers``
processes that deliver those events through the real delivery path
(``kloyst.outbox.delivery.deliver``: mark delivered + run ``imports.process_chunk`` in one
transaction). Runs: the CSV into an empty vendor; the same rows again with MERGE_LABELS
(every row a duplicate); the same rows as XLSX into a fresh vendor. Reports rows/s of the
chunk phase (and of extraction) and the peak RSS of every process. Uses its own database
(``kloyst_bench_import``); the upload's virus scan is not part of the measurement.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, ".")

from kloyst import make_configurator, testing  # noqa: E402
from kloyst.db import make_engine, migrate, session_scope, tenancy  # noqa: E402
from kloyst.plugins import build_plugin_manager  # noqa: E402


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    us_areas = ["212", "415", "646", "312", "617", "305", "206", "512"]
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("phone,name,country,tags,city\r\n")
        for i in range(rows):
            kind = rng.random()
            tail = rng.randrange(10 ** 6)
            if kind < 0.10:
                phone, country = rng.choice(["12345", "n/a", "+999123", "98765", "07700 900123",
                                             f"{tail}{tail}{tail}"]), ""
            elif kind < 0.45:
                digits = f"9{rng.randrange(6, 10)}{rng.randrange(10 ** 8):08d}"
                phone, country = rng.choice([(f"+91 {digits[:5]} {digits[5:]}", ""), (digits, "IN"),
                                             (f"0{digits}", "IN"), (f"91{digits}", "IN")])
            elif kind < 0.70:
                area, exchange = rng.choice(us_areas), rng.randrange(200, 1000)
                line = f"{tail % 10000:04d}"
                phone, country = rng.choice([(f"+1 ({area}) {exchange}-{line}", ""), (f"{area}{exchange}{line}", "US"),
                                             (f"1-{area}-{exchange}-{line}", "US")])
            elif kind < 0.85:
                digits = f"7{rng.choice('45789')}{rng.randrange(10 ** 8):08d}"
                phone, country = rng.choice([(f"+44 {digits[:4]} {digits[4:]}", ""), (f"0{digits}", "GB")])
            else:
                digits = f"{rng.choice(['11', '21', '31', '41'])}9{rng.randrange(6, 10)}{rng.randrange(10 ** 7):07d}"
                phone, country = rng.choice([(f"+55 {digits[:2]} {digits[2:7]}-{digits[7:]}", ""),
                                             (f"({digits[:2]}) {digits[2:7]}-{digits[7:]}", "BR")])
            out.write(f'"{phone}",Person {i},{country},"vip,{"abc"[i % 3]}",City {i % 50}\r\n')


def to_xlsx(csv_path: Path, xlsx_path: Path) -> None:
    import csv

    import openpyxl

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet()
    with open(csv_path, encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle):
            sheet.append(row)
    workbook.save(xlsx_path)


def build_registry(url: str, storage: str, redis_url: str):
    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": redis_url,
                "kloyst.queue.backend": "memory", "kloyst.queue.immediate": "false",
                "imports.storage_dir": storage, "imports.max_upload_bytes": 10 ** 10,
                # The 1,000,000-row workbook's sheet is ~290 MB of XML: above the default zip-guard sizes,
                # which keep a worker's memory bounded (zipguard.py). Raised here, as an operator would.
                "imports.xlsx_max_member_bytes": 512 * 1024 * 1024, "imports.xlsx_max_total_bytes": 768 * 1024 * 1024}
    return make_configurator({"here": "."}, settings, environ={}).registry


def worker(url, storage, redis_url, events: mp.Queue, results: mp.Queue) -> None:
    from kloyst.outbox.delivery import deliver

    from kloyst_plugins.imports import processing

    registry = build_registry(url, storage, redis_url)
    delivered = rescheduled = 0
    while True:
        item = events.get()
        if item is None:
            break
        event_id, vendor_id, batch_id, job_id, chunk_index = item
        outcome = deliver(registry, event_id, vendor_id, "kloyst.task", batch_id)
        if outcome == "rescheduled":
            # A deadlock or a busy XLSX conversion: the relay would republish the event; here the
            # same task function is run again directly (its own transaction), and counted.
            rescheduled += 1
            time.sleep(0.2)
            outcome = processing.run_chunk_now(registry, uuid.UUID(vendor_id), uuid.UUID(job_id), chunk_index)
        if outcome not in ("delivered", "done"):
            print(f"event {event_id}: {outcome}", file=sys.stderr)
        delivered += 1
    results.put({"worker": mp.current_process().name, "chunks": delivered, "rescheduled": rescheduled,
                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024})


def run_import(registry, url, storage, redis_url, vendor_id, path: Path, strategy: str, workers: int) -> dict:
    import sqlalchemy as sa

    from kloyst_plugins.imports import cli
    from kloyst_plugins.imports.models import ContactImportJob

    started = time.monotonic()
    job_id = cli.create_job(registry, vendor_id, path, scan=False)  # the scan is not part of the measurement
    extracted = time.monotonic()
    body = {"columns": {"phone": "phone", "name": "name", "country": "country", "labels": "tags",
                        "attributes": {"city": "city"}}, "default_country": "IN", "merge_strategy": strategy}
    cli.confirm(registry, vendor_id, job_id, body, queue=True)
    with registry["kloyst.engine"].begin() as c:
        events_ = c.execute(sa.text(
            "SELECT id, batch_id, payload FROM outbox_event WHERE status = 'leased' AND vendor_id = :v ORDER BY id"),
            {"v": vendor_id}).all()
    ctx = mp.get_context("fork")
    events, results = ctx.Queue(), ctx.Queue()
    for event_id, batch_id, payload in events_:
        events.put((event_id, str(vendor_id), batch_id, str(job_id), payload["kwargs"]["chunk_index"]))
    for _ in range(workers):
        events.put(None)
    registry["kloyst.engine"].dispose()
    chunk_start = time.monotonic()
    procs = [ctx.Process(target=worker, args=(url, storage, redis_url, events, results), name=f"worker-{i + 1}")
             for i in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    chunk_seconds = time.monotonic() - chunk_start
    peaks = [results.get() for _ in procs]
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        job = db.get(ContactImportJob, job_id)
        summary = {k: getattr(job, k) for k in ("status", "rows_processed", "created_count", "updated_count",
                                                "duplicate_count", "rejected_count", "chunk_count")}
    rows = summary["rows_processed"]
    return {**summary, "extract_s": round(extracted - started, 1), "chunks_s": round(chunk_seconds, 1),
            "chunk_rows_per_s": round(rows / chunk_seconds), "end_to_end_rows_per_s":
            round(rows / (time.monotonic() - started)), "workers": peaks,
            "parent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-csv", action="store_true", help="only the XLSX run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--keep-db", action="store_true", help="leave the kloyst_bench_import database (to inspect)")
    args = parser.parse_args()

    url = testing.create_database("kloyst_bench_import")
    engine = make_engine(url)
    migrate.upgrade(build_plugin_manager(), engine)
    engine.dispose()
    work = Path(tempfile.mkdtemp(prefix="kloyst-bench-import-"))
    storage = str(work / "storage")
    registry = build_registry(url, storage, args.redis_url)
    account_factory = None

    def new_vendor(name):
        nonlocal account_factory
        with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
            account_factory = testing.AccountFactory(db, registry["kloyst.access_tokens"])
            vendor_id = account_factory.vendor(name).vendor_id
            for plugin in ("contacts", "imports"):
                testing.enable_plugin(db, vendor_id, plugin)
        return vendor_id

    csv_path = work / "contacts.csv"
    if not args.skip_csv:
        t = time.monotonic()
        generate(csv_path, args.rows)
        print(f"generated {args.rows:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.monotonic() - t:.0f}s", flush=True)
        vendor = new_vendor("Bench CSV")
        print("csv, new contacts:", run_import(registry, url, storage, args.redis_url, vendor, csv_path,
                                               "MERGE_LABELS", args.workers), flush=True)
        print("csv, re-import (all duplicates, MERGE_LABELS):",
              run_import(registry, url, storage, args.redis_url, vendor, csv_path, "MERGE_LABELS", args.workers),
              flush=True)
    if args.xlsx_rows:
        small = work / "contacts-xlsx.csv"
        generate(small, args.xlsx_rows, seed=11)
        xlsx_path = work / "contacts.xlsx"
        t = time.monotonic()
        to_xlsx(small, xlsx_path)
        print(f"wrote {args.xlsx_rows:,} rows as XLSX ({xlsx_path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.monotonic() - t:.0f}s", flush=True)
        print("xlsx, new contacts:", run_import(registry, url, storage, args.redis_url, new_vendor("Bench XLSX"),
                                                xlsx_path, "MERGE_LABELS", args.workers), flush=True)
    registry["kloyst.engine"].dispose()
    if not args.keep_db:
        testing.drop_database("kloyst_bench_import")
    print(f"date: {time.strftime('%Y-%m-%d')}; python {sys.version.split()[0]}; uuid {uuid.uuid4().hex[:6]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
