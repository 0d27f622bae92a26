"""The ledger's invariants, checked from the data alone, as a nightly job can (docs/wallet.md).

A wallet row is a cache of its ledger: if the two ever disagree, the ledger is right and
something wrote money outside :mod:`.ledger`. The test suite runs this after every wallet test;
an operator can run it against production (it only reads). Each violation is a readable line.

A single send's hold (reference ``message:<id>``: ``POST /v1/messages``, a test send, a requeued
dead letter) pays for exactly one message, so it is settled once: one CAPTURE or one RELEASE of
its whole amount, never both, never two (a REFUND may follow its capture). One still open is a
message not yet sent.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

_WALLETS = text("""
SELECT w.vendor_id, w.balance_micros, w.held_micros,
    COALESCE((SELECT SUM(l.balance_delta_micros) FROM ledger_entry l WHERE l.vendor_id = w.vendor_id), 0),
    COALESCE((SELECT SUM(l.held_delta_micros) FROM ledger_entry l WHERE l.vendor_id = w.vendor_id), 0),
    COALESCE((SELECT SUM(h.amount_micros - h.captured_micros - h.released_micros) FROM wallet_hold h
              WHERE h.vendor_id = w.vendor_id), 0)
FROM wallet w
""")

_HOLDS = text("""
SELECT h.id, h.amount_micros, h.captured_micros, h.released_micros, h.refunded_micros,
    COALESCE(SUM(CASE WHEN l.kind = 'HOLD' THEN l.amount_micros END), 0),
    COALESCE(SUM(CASE WHEN l.kind = 'CAPTURE' THEN l.amount_micros END), 0),
    COALESCE(SUM(CASE WHEN l.kind = 'RELEASE' THEN l.amount_micros END), 0),
    COALESCE(SUM(CASE WHEN l.kind = 'REFUND' THEN l.amount_micros END), 0)
FROM wallet_hold h LEFT JOIN ledger_entry l ON l.hold_id = h.id AND l.vendor_id = h.vendor_id
GROUP BY h.id, h.amount_micros, h.captured_micros, h.released_micros, h.refunded_micros
""")

_MESSAGE_HOLDS = text("""
SELECT h.id, h.amount_micros, h.captured_micros, h.released_micros,
    COUNT(CASE WHEN l.kind = 'CAPTURE' THEN 1 END), COUNT(CASE WHEN l.kind = 'RELEASE' THEN 1 END)
FROM wallet_hold h LEFT JOIN ledger_entry l ON l.hold_id = h.id AND l.vendor_id = h.vendor_id
WHERE h.reference LIKE 'message:%'
GROUP BY h.id, h.amount_micros, h.captured_micros, h.released_micros
""")

_ORPHANS = text("""
SELECT DISTINCT l.vendor_id FROM ledger_entry l
WHERE NOT EXISTS (SELECT 1 FROM wallet w WHERE w.vendor_id = l.vendor_id)
""")


def invariant_violations(conn: Connection) -> list[str]:
    """Every way the wallets disagree with their ledger and holds (empty: all is well)."""
    problems = []
    for vendor_id, balance, held, ledger_balance, ledger_held, outstanding in conn.execute(_WALLETS):
        if balance != ledger_balance:
            problems.append(f"vendor {vendor_id}: balance {balance} but the ledger sums to {ledger_balance}")
        if held != ledger_held or held != outstanding:
            problems.append(f"vendor {vendor_id}: held {held}, ledger held {ledger_held}, holds outstanding "
                            f"{outstanding}")
        if not 0 <= held <= balance:
            problems.append(f"vendor {vendor_id}: held {held} outside 0..balance {balance}")
    for hold_id, amount, captured, released, refunded, *ledger in conn.execute(_HOLDS):
        stored = [amount, captured, released, refunded]
        if stored != ledger:
            problems.append(f"hold {hold_id}: amount/captured/released/refunded {stored} but its entries say {ledger}")
    for hold_id, amount, captured, released, captures, releases in conn.execute(_MESSAGE_HOLDS):
        settled_once = captures + releases == 0 or (captures + releases == 1 and captured + released == amount)
        if not settled_once:
            problems.append(f"hold {hold_id} of a single message: {captures} capture(s) and {releases} release(s) "
                            f"(captured {captured}, released {released} of {amount}); it must be settled exactly once")
    for (vendor_id,) in conn.execute(_ORPHANS):
        problems.append(f"vendor {vendor_id}: ledger entries but no wallet")
    return problems
