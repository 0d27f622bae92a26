"""``kloyst outbox …`` and ``kloyst queue …``: the same operations as the admin endpoints, for operators."""

from __future__ import annotations

import json
import sys
import uuid

from kloyst.cli.bootstrap import load
from kloyst.db import session_scope, tenancy
from kloyst.outbox import services
from kloyst.outbox.reconcile import reconcile


def _registry(ini: str):
    return load(ini)[1]


def _session(registry):
    return session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS)


def cmd_status(args) -> int:
    registry = _registry(args.ini)
    with _session(registry) as session:
        rows = services.backlog(session)
    print(json.dumps({"queue_depth": registry["kloyst.queue"].depth(),
                      "vendors": [r.as_json() for r in rows]}, default=str, indent=2))
    return 0


def cmd_dead(args) -> int:
    registry = _registry(args.ini)
    with _session(registry) as session:
        events = services.dead_letters(session, vendor_id=uuid.UUID(args.vendor) if args.vendor else None,
                                       limit=args.limit)
        for event in events:
            print(json.dumps(services.dead_letter_json(event), default=str))
    return 0


def cmd_requeue(args) -> int:
    if not (args.id or args.vendor or args.all):
        print("say which dead events to requeue: --id N (repeatable), --vendor UUID, or --all", file=sys.stderr)
        return 2
    registry = _registry(args.ini)
    with _session(registry) as session:
        vendor_id = uuid.UUID(args.vendor) if args.vendor else None
        count = services.requeue(session, ids=args.id or None, vendor_id=vendor_id, all_dead=args.all)
    print(f"requeued {count} dead event(s)")
    return 0


def cmd_reconcile(args) -> int:
    print(json.dumps(reconcile(_registry(args.ini))))
    return 0


def add_commands(subparsers) -> None:
    outbox = subparsers.add_parser("outbox", help="outbox backlog, dead letters, requeue, reconcile")
    actions = outbox.add_subparsers(dest="outbox_action", metavar="ACTION")
    actions.required = True
    for name, handler, text in (("status", cmd_status, "backlog per vendor and queue depth"),
                                ("dead", cmd_dead, "list dead-letter events"),
                                ("requeue", cmd_requeue, "requeue dead-letter events"),
                                ("reconcile", cmd_reconcile, "return lost work to pending now")):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("ini")
        parser.set_defaults(handler=handler)
        if name == "dead":
            parser.add_argument("--vendor")
            parser.add_argument("--limit", type=int, default=100)
        if name == "requeue":
            parser.add_argument("--id", type=int, action="append")
            parser.add_argument("--vendor")
            parser.add_argument("--all", action="store_true")
