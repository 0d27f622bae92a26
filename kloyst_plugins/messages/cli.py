"""``kloyst messages check <ini>``: every message against the statuses Meta reported, for a probe or a nightly job.

    kloyst messages check staging.ini

Reads only. Prints a summary and exits 0 when every stored status is applied and every second
send is counted where it belongs; otherwise prints each disagreement
(:func:`kloyst_plugins.messages.audit.disagreements`, at most 100 lines of each kind, with the
full count) and exits 1, so a cron job or a monitoring probe can alert on the status alone.
"""

from __future__ import annotations

import sys

from kloyst.api import load, read_only_connection
from kloyst_plugins.messages.audit import LIMIT, disagreements, summary


def cmd_check(args) -> int:
    _, registry = load(args.ini)
    with read_only_connection(registry["kloyst.engine"]) as conn:
        found = disagreements(conn)
        totals = summary(conn)
    facts = (f"{totals['status_events']} status events; {totals['duplicate_sends']} duplicate sends recorded "
             f"({totals['messages_sent_twice']} messages); {totals['statuses_without_message']} statuses kept "
             f"without a message; {totals['statuses_after_giving_up']} statuses of messages that had ended FAILED "
             "or CANCELLED")
    if not found:
        print(f"ok: every message agrees with Meta's statuses: {facts}")
        return 0
    for kind, (count, lines) in found.items():
        for line in lines:
            print(f"{kind}: {line}", file=sys.stderr)
        if count > len(lines):
            print(f"{kind}: … and {count - LIMIT} more", file=sys.stderr)
    print(f"{sum(count for count, _ in found.values())} disagreement(s) between messages and Meta's statuses "
          f"({', '.join(f'{kind} {count}' for kind, (count, _) in found.items())}); {facts}", file=sys.stderr)
    return 1


def add_commands(subparsers) -> None:
    messages = subparsers.add_parser("messages", help="messages and the statuses Meta reported for them")
    actions = messages.add_subparsers(dest="messages_action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser("check", help="check every message against Meta's stored statuses (reads only; "
                                             "exit 1 on a disagreement)")
    check.add_argument("ini", help="the ini file, e.g. staging.ini")
    check.set_defaults(handler=cmd_check)
