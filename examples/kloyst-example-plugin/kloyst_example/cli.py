"""``kloyst example-stats <ini>``: how many notes each vendor keeps (a plugin adding a CLI command)."""

from __future__ import annotations

from sqlalchemy import func, select

from kloyst.api import load, session_scope, tenancy
from kloyst_example.models import Note


def cmd_stats(args) -> int:
    _, registry = load(args.ini)
    # Platform-wide on purpose: an operator's report across vendors, not a vendor's request.
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        rows = db.execute(select(Note.vendor_id, func.count()).group_by(Note.vendor_id)
                          .order_by(Note.vendor_id)).all()
    for vendor_id, count in rows:
        print(f"{vendor_id} {count}")
    return 0


def add_commands(subparsers) -> None:
    stats = subparsers.add_parser("example-stats", help="notes per vendor (kloyst-example-plugin)")
    stats.add_argument("ini", help="the ini file, e.g. development.ini")
    stats.set_defaults(handler=cmd_stats)
