"""``kloyst wallet check <ini>``: the ledger invariant over every wallet, for a nightly job (docs/wallet.md).

    kloyst wallet check staging.ini

Reads only. Prints ``ok: N wallets, M holds agree with their ledger`` and exits 0, or prints
every disagreement (:func:`kloyst_plugins.wallet.audit.invariant_violations`) and exits 1, so a
cron job or a monitoring probe can alert on the status alone.
"""

from __future__ import annotations

import sys


def cmd_check(args) -> int:
    from sqlalchemy import func, select

    from kloyst.api import load
    from kloyst.api import read_only_connection
    from kloyst_plugins.wallet.audit import invariant_violations
    from kloyst_plugins.wallet.records import HOLD, WALLET

    _, registry = load(args.ini)
    with read_only_connection(registry["kloyst.engine"]) as conn:
        problems = invariant_violations(conn)
        wallets = conn.execute(select(func.count()).select_from(WALLET)).scalar()
        holds = conn.execute(select(func.count()).select_from(HOLD)).scalar()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} disagreement(s) between wallets and their ledger", file=sys.stderr)
        return 1
    print(f"ok: {wallets} wallets, {holds} holds agree with their ledger")
    return 0


def add_commands(subparsers) -> None:
    wallet = subparsers.add_parser("wallet", help="wallets and their ledger")
    actions = wallet.add_subparsers(dest="wallet_action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser("check", help="check every wallet against its ledger (reads only; exit 1 on a "
                                             "disagreement)")
    check.add_argument("ini", help="the ini file, e.g. staging.ini")
    check.set_defaults(handler=cmd_check)
