"""``kloyst pricing load-card <ini>``: load a rate card from Meta's CSV files, or the development card.

    kloyst pricing load-card development.ini --development
    kloyst pricing load-card staging.ini --pricing Pricing.csv --tiers "Tier Pricing.csv" --effective-from 2026-01-01

The same parsing and checks as the admin upload: a file with a bad row is refused whole,
every problem printed with its line, exit status 1. Loading the same files with the same
date twice is harmless (the snapshot already exists; exit status 0).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path


def _date(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def cmd_load_card(args) -> int:
    from kloyst.api import load
    from kloyst.api import session_scope, tenancy
    from kloyst_plugins.pricing import cards, snapshots

    if not args.development and not args.pricing:
        print("give --development, or --pricing FILE (with --tiers FILE and --effective-from DATE)", file=sys.stderr)
        return 2
    _, registry = load(args.ini)
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        try:
            if args.development:
                snapshot = snapshots.load_development_card(db)
            else:
                tiers = Path(args.tiers).read_bytes() if args.tiers else None
                snapshot = snapshots.create(db, pricing=Path(args.pricing).read_bytes(), tiers=tiers,
                                            effective_from=args.effective_from or dt.datetime.now(dt.timezone.utc),
                                            note=args.note or f"loaded from {Path(args.pricing).name}")
        except cards.CardError as exc:
            for problem in exc.problems:
                print(f"{problem['file']} line {problem['line']}: {problem['problem']}", file=sys.stderr)
            return 1
        except snapshots.DuplicateSnapshot as exc:
            snapshot = exc.snapshot
            print(f"already loaded as snapshot {snapshot.id}")
            return 0
        print(f"snapshot {snapshot.id}: {snapshot.currency}, effective {snapshot.effective_from.isoformat()}")
    return 0


def add_commands(subparsers) -> None:
    pricing = subparsers.add_parser("pricing", help="rate cards")
    actions = pricing.add_subparsers(dest="pricing_action", metavar="ACTION")
    actions.required = True
    load_card = actions.add_parser("load-card", help="load a rate card (Meta's Pricing.csv / Tier Pricing.csv)")
    load_card.add_argument("ini", help="the ini file, e.g. development.ini")
    load_card.add_argument("--development", action="store_true", help="the development card shipped with Kloyst")
    load_card.add_argument("--pricing", help="Meta's Pricing.csv")
    load_card.add_argument("--tiers", help="Meta's Tier Pricing.csv")
    load_card.add_argument("--effective-from", type=_date, help="date (UTC) the card takes effect; default now")
    load_card.add_argument("--note", help="where the card came from")
    load_card.set_defaults(handler=cmd_load_card)
