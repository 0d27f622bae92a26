"""Money for messages that reached an end, in bulk: the ``kloyst_messages_settled`` hook's work.

Called in the sender's outcome transaction at thousands of messages a second, so a call costs
five statements whatever its size and mix (PostgreSQL: one ``unnest`` statement each; SQLite:
``executemany``):

1. lock the holds named (``FOR UPDATE``, in id order: the ledger's lock order, hold then wallet);
2. read which per-message keys already exist, and the captures (and Meta-price movements) that
   refunds give back;
3. insert the new ledger entries (``ON CONFLICT (vendor_id, idempotency_key) DO NOTHING``);
4. add the sums to each hold (captured, released, refunded);
5. add the sums to each wallet.

A call with ``repriced`` messages adds two: the wallets of those vendors are locked to read
what is available before the plan (after the holds: the lock order), and re-read afterwards for
the low-balance alert when the difference was debited.

Per message and hold, by outcome: ``sent`` → CAPTURE its price from its hold (key
``msg:<id>:capture:<hold id>``); ``failed`` → RELEASE its price back to available
(``msg:<id>:release:<hold id>``); ``undelivered`` → REFUND what was captured for it under that hold
(``msg:<id>:refund:<hold id>``; nothing when nothing was captured). A message reported again meets
its key in step 2 and moves nothing: idempotent per message, outcome and hold. The hold is part of
the key because a campaign's retry-failed pays for a failed message again under a new hold: its
second round must be able to capture or release again. Step 2 is race-free because two calls
naming one hold serialize on step 1's lock.

**A capture or release larger than the hold's outstanding** (a pricing bug, or a hold
released early) takes what is outstanding and logs an error naming the message: nothing goes
negative, no other vendor money is touched, and the shortfall is visible in the logs and in
the entry's amount (less than the message's price). Within a call captures are served first
(money Meta was paid for outranks money handed back). A message whose hold is unknown or has
nothing left is skipped with an error log rather than failing the sender's transaction —
refusing would leave the message's state unrecorded, which is worse than an unbilled message.
Captures and releases leave *available* unchanged or higher, so settlement never raises the
low-balance alert; releases and refunds may re-arm it (step 5).

**Meta's price decides** (docs/wallet.md, "Settling by Meta's price"). A status webhook carries
Meta's ``pricing``; when it disagrees with what was held, the messages plugin reports

* ``free`` — Meta does not charge the message (not billable, ``free_customer_service``,
  ``free_entry_point``): exactly like ``undelivered``, the vendor gets back everything the
  message cost (same key ``msg:<id>:refund:<hold id>``, so a message both free and later
  failed is refunded once);
* ``repriced`` with ``price_micros`` = the vendor's price for the category Meta charged: the
  difference to what was captured moves once (key ``msg:<id>:meta:<hold id>``). Cheaper → a
  REFUND of the difference. Dearer → an ADJUSTMENT that debits the difference from the
  vendor's *available* money (never from the hold, whose rest pays for other queued messages
  of its campaign), at most what is available: balances never go negative, and a shortfall is
  logged as an error naming the message (the platform has paid Meta more than it collected).
  A message already refunded (free or undelivered) is never charged again, and a later
  ``undelivered`` gives back the capture *and* the extra debit (``msg:<id>:meta-undo:<hold id>``).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import ARRAY, String, any_, bindparam, select, text, update
from sqlalchemy.engine import Connection

from kloyst.api import format_micros, new_id, utcnow
from kloyst_plugins.wallet import alerts
from kloyst_plugins.wallet.models import EntryKind
from kloyst_plugins.wallet.records import ENTRY, HOLD, WALLET, insert_for, request_hash

log = logging.getLogger(__name__)

META = "META"  # an outcome's action that is no single entry kind: move the money to Meta's price
KINDS = {"sent": EntryKind.CAPTURE, "failed": EntryKind.RELEASE, "undelivered": EntryKind.REFUND,
         "free": EntryKind.REFUND, "repriced": META}
_ORDER = {EntryKind.CAPTURE: 0, EntryKind.RELEASE: 1, EntryKind.REFUND: 2, META: 3}  # later ones see earlier
_SQLITE_CHUNK = 5000  # bound parameters per IN list, well under SQLite's 32,766


def message_key(message_id: uuid.UUID, kind, hold_id: uuid.UUID) -> str:
    """The per-message key of a movement: ``kind`` is an :class:`EntryKind`, or ``"meta"`` / ``"meta-undo"``."""
    word = kind.value.lower() if isinstance(kind, EntryKind) else str(kind).lower()
    return f"msg:{message_id}:{word}:{hold_id}"


def _keys(item) -> dict[str, str]:
    return {name: message_key(item.message_id, kind, item.hold_id) for name, kind in (
        ("capture", EntryKind.CAPTURE), ("release", EntryKind.RELEASE), ("refund", EntryKind.REFUND),
        ("meta", "meta"), ("meta_undo", "meta-undo"))}


@dataclass
class _Hold:
    vendor_id: uuid.UUID
    outstanding: int
    reference: str


@dataclass(frozen=True)
class Settled:
    """What a call moved (entries written, by kind), for logs and tests."""

    captured: int = 0
    released: int = 0
    refunded: int = 0
    adjusted: int = 0  # Σ ADJUSTMENT balance changes: − extra charged for Meta's dearer category, + given back
    entries: int = 0


def settle_messages(conn: Connection, settled) -> Settled:
    """Capture, release or refund each priced message's money from its hold (see the module docstring)."""
    wanted: dict[tuple, object] = {}
    for item in settled:
        kind = KINDS.get(item.outcome)
        if kind is None or item.price_micros <= 0:
            continue
        if item.hold_id is None:
            log.error("priced message %s (%s) has no hold: nothing to settle it with", item.message_id, item.outcome)
            continue
        wanted.setdefault((item.message_id, kind), item)
    if not wanted:
        return Settled()
    holds = _lock_holds(conn, sorted({item.hold_id for item in wanted.values()}))
    items = [(kind, item) for (_, kind), item in wanted.items() if _hold_of(holds, item) is not None]
    if not items:
        return Settled()
    keys = set()
    for kind, item in items:
        keys |= set(_keys(item).values()) if kind in (EntryKind.REFUND, META) else {
            message_key(item.message_id, kind, item.hold_id)}
    vendors = sorted({holds[item.hold_id].vendor_id for _, item in items})
    existing = _existing(conn, vendors, sorted(keys))
    # Only a dearer category Meta charged takes from available money: lock those wallets (after the holds).
    available = _lock_available(conn, sorted({item.vendor_id for kind, item in items if kind == META}))
    entries = _plan(items, holds, existing, available)
    inserted = _insert(conn, entries)
    _apply(conn, inserted)
    sums = defaultdict(int)
    for entry in inserted:
        sums[entry["kind"]] += entry["balance_delta_micros"] if entry["kind"] == "ADJUSTMENT" else entry[
            "amount_micros"]
    return Settled(captured=sums["CAPTURE"], released=sums["RELEASE"], refunded=sums["REFUND"],
                   adjusted=sums["ADJUSTMENT"], entries=len(inserted))


def _hold_of(holds: dict, item) -> _Hold | None:
    hold = holds.get(item.hold_id)
    if hold is None or hold.vendor_id != item.vendor_id:
        log.error("message %s names hold %s, which vendor %s does not have: its money was not moved",
                  item.message_id, item.hold_id, item.vendor_id)
        return None
    return hold


def _plan(items, holds: dict[uuid.UUID, _Hold], existing: dict[tuple[uuid.UUID, str], tuple[int, str]],
          available: dict[uuid.UUID, int]) -> list[dict]:
    """The new entries, captures and releases clamped to what each hold still reserves (module docstring)."""
    now, entries = utcnow(), []
    planned: dict[tuple[uuid.UUID, str], tuple[int, str]] = {}  # this call's entries, as ``existing`` has them

    def seen(item, key: str) -> tuple[int, str] | None:
        return existing.get((item.vendor_id, key)) or planned.get((item.vendor_id, key))

    def add(item, kind: EntryKind, key: str, amount: int, balance_delta: int, held_delta: int) -> None:
        planned[(item.vendor_id, key)] = (amount, kind.value)
        entries.append(dict(
            id=new_id(), vendor_id=item.vendor_id, kind=kind.value, amount_micros=amount,
            balance_delta_micros=balance_delta, held_delta_micros=held_delta, hold_id=item.hold_id,
            message_id=item.message_id, reference=holds[item.hold_id].reference, idempotency_key=key,
            request_hash=request_hash(kind.value, hold_id=item.hold_id, message_id=item.message_id,
                                      price=item.price_micros),
            created_at=now))

    for kind, item in sorted(items, key=lambda pair: _ORDER[pair[0]]):
        hold, keys = holds[item.hold_id], _keys(item)
        if kind is EntryKind.REFUND:
            _plan_refund(item, keys, seen, add)
        elif kind == META:
            _plan_meta_price(item, keys, seen, add, available)
        else:
            key = message_key(item.message_id, kind, item.hold_id)
            if seen(item, key):
                continue
            amount = min(item.price_micros, hold.outstanding)
            if amount < item.price_micros:
                log.error("%s of message %s: price %s but hold %s has only %s outstanding; %s taken",
                          kind.value, item.message_id, format_micros(item.price_micros), item.hold_id,
                          format_micros(hold.outstanding), format_micros(amount))
            hold.outstanding -= amount
            if amount > 0:
                add(item, kind, key, amount, -amount if kind is EntryKind.CAPTURE else 0, -amount)
    return entries


def _plan_refund(item, keys: dict[str, str], seen, add) -> None:
    """The vendor pays nothing for this message (undelivered, or free by Meta's word): give back all it cost."""
    if seen(item, keys["refund"]):
        return
    captured = (seen(item, keys["capture"]) or (0, ""))[0]
    meta_amount, meta_kind = seen(item, keys["meta"]) or (0, "")
    refund = captured - (meta_amount if meta_kind == EntryKind.REFUND.value else 0)
    if refund > 0:
        add(item, EntryKind.REFUND, keys["refund"], refund, refund, 0)
    if meta_kind == EntryKind.ADJUSTMENT.value and not seen(item, keys["meta_undo"]):
        add(item, EntryKind.ADJUSTMENT, keys["meta_undo"], meta_amount, meta_amount, 0)


def _plan_meta_price(item, keys: dict[str, str], seen, add, available: dict[uuid.UUID, int]) -> None:
    """Move what the message cost to ``item.price_micros``, the price of the category Meta charged, once."""
    if seen(item, keys["refund"]) or seen(item, keys["meta"]):
        return  # refunded already (free or undelivered), or Meta's price applied already
    captured = (seen(item, keys["capture"]) or (0, ""))[0]
    if captured <= 0:
        log.warning("Meta priced message %s, which was never captured from hold %s: nothing to adjust",
                    item.message_id, item.hold_id)
        return
    if item.price_micros < captured:
        difference = captured - item.price_micros
        add(item, EntryKind.REFUND, keys["meta"], difference, difference, 0)
        return
    extra = item.price_micros - captured
    if extra <= 0:
        return
    taken = min(extra, max(0, available.get(item.vendor_id, 0)))
    if taken < extra:
        log.error("Meta charged message %s %s but %s was captured; vendor %s has %s available: %s debited, %s "
                  "not collected", item.message_id, format_micros(item.price_micros), format_micros(captured),
                  item.vendor_id, format_micros(available.get(item.vendor_id, 0)), format_micros(taken),
                  format_micros(extra - taken))
    if taken > 0:
        available[item.vendor_id] -= taken
        add(item, EntryKind.ADJUSTMENT, keys["meta"], taken, -taken, 0)


def _lock_available(conn: Connection, vendor_ids: list) -> dict[uuid.UUID, int]:
    """Available money (balance − held) of these vendors' wallets, locked (after the holds: the lock order)."""
    if not vendor_ids:
        return {}
    rows = conn.execute(select(WALLET.c.vendor_id, WALLET.c.balance_micros - WALLET.c.held_micros)
                        .where(WALLET.c.vendor_id.in_(vendor_ids)).order_by(WALLET.c.vendor_id).with_for_update())
    return {row[0]: int(row[1]) for row in rows}


def _lock_holds(conn: Connection, hold_ids: list[uuid.UUID]) -> dict[uuid.UUID, _Hold]:
    outstanding = HOLD.c.amount_micros - HOLD.c.captured_micros - HOLD.c.released_micros
    statement = (select(HOLD.c.id, HOLD.c.vendor_id, outstanding, HOLD.c.reference)
                 .where(HOLD.c.id.in_(hold_ids)).order_by(HOLD.c.id).with_for_update())
    return {row[0]: _Hold(row[1], row[2], row[3]) for row in conn.execute(statement)}


def _existing(conn: Connection, vendor_ids: list[uuid.UUID],
              keys: list[str]) -> dict[tuple[uuid.UUID, str], tuple[int, str]]:
    columns = (ENTRY.c.vendor_id, ENTRY.c.idempotency_key, ENTRY.c.amount_micros, ENTRY.c.kind)
    if conn.dialect.name == "postgresql":
        statement = select(*columns).where(ENTRY.c.vendor_id.in_(vendor_ids), ENTRY.c.idempotency_key == any_(
            bindparam("keys", type_=ARRAY(String))))
        rows = conn.execute(statement, {"keys": keys}).all()
    else:
        rows = []
        for start in range(0, len(keys), _SQLITE_CHUNK):
            chunk = keys[start:start + _SQLITE_CHUNK]
            rows.extend(conn.execute(select(*columns).where(ENTRY.c.vendor_id.in_(vendor_ids),
                                                            ENTRY.c.idempotency_key.in_(chunk))).all())
    return {(row[0], row[1]): (row[2], row[3]) for row in rows}


_INSERT_PG = text("""
INSERT INTO ledger_entry (id, vendor_id, kind, amount_micros, balance_delta_micros, held_delta_micros, hold_id,
                          message_id, reference, idempotency_key, request_hash, created_at)
SELECT e.*, :now FROM unnest(CAST(:ids AS uuid[]), CAST(:vendor_ids AS uuid[]), CAST(:kinds AS text[]),
    CAST(:amounts AS bigint[]), CAST(:balance_deltas AS bigint[]), CAST(:held_deltas AS bigint[]),
    CAST(:hold_ids AS uuid[]), CAST(:message_ids AS uuid[]), CAST(:references AS text[]), CAST(:keys AS text[]),
    CAST(:hashes AS text[])) AS e
ON CONFLICT (vendor_id, idempotency_key) DO NOTHING
RETURNING idempotency_key
""").bindparams(bindparam("now", type_=ENTRY.c.created_at.type))

_COLUMNS = {"ids": "id", "vendor_ids": "vendor_id", "kinds": "kind", "amounts": "amount_micros",
            "balance_deltas": "balance_delta_micros", "held_deltas": "held_delta_micros", "hold_ids": "hold_id",
            "message_ids": "message_id", "references": "reference", "keys": "idempotency_key",
            "hashes": "request_hash"}


def _insert(conn: Connection, entries: list[dict]) -> list[dict]:
    """Write the entries; returns those actually inserted (a concurrent writer cannot have taken a key: holds
    are locked, but the conflict clause keeps even that case from moving money twice)."""
    if not entries:
        return []
    if conn.dialect.name == "postgresql":
        params = {name: [_plain(e[column]) for e in entries] for name, column in _COLUMNS.items()}
        written = set(conn.execute(_INSERT_PG, {**params, "now": entries[0]["created_at"]}).scalars())
        return [e for e in entries if e["idempotency_key"] in written]
    # SQLite: the caller's transaction already holds the database's write lock, so nobody else inserts meanwhile.
    conn.execute(insert_for(conn)(ENTRY).on_conflict_do_nothing(index_elements=["vendor_id", "idempotency_key"]),
                 entries)
    return entries


def _plain(value):
    return str(value) if isinstance(value, uuid.UUID) else value


_HOLDS_PG = text("""
UPDATE wallet_hold h SET captured_micros = h.captured_micros + d.captured,
    released_micros = h.released_micros + d.released, refunded_micros = h.refunded_micros + d.refunded,
    updated_at = :now
FROM unnest(CAST(:ids AS uuid[]), CAST(:captured AS bigint[]), CAST(:released AS bigint[]),
            CAST(:refunded AS bigint[])) AS d(id, captured, released, refunded)
WHERE h.id = d.id
""").bindparams(bindparam("now", type_=HOLD.c.updated_at.type))

_WALLETS_PG = text("""
UPDATE wallet w SET balance_micros = w.balance_micros + d.balance, held_micros = w.held_micros + d.held,
    low_balance_flag = w.low_balance_flag
        AND w.balance_micros + d.balance - (w.held_micros + d.held) < w.low_balance_threshold_micros,
    updated_at = :now
FROM unnest(CAST(:vendor_ids AS uuid[]), CAST(:balance AS bigint[]), CAST(:held AS bigint[])) AS d(vendor_id, balance,
                                                                                                    held)
WHERE w.vendor_id = d.vendor_id
""").bindparams(bindparam("now", type_=WALLET.c.updated_at.type))


def _apply(conn: Connection, inserted: list[dict]) -> None:
    """Add the inserted entries' sums to their holds, then their wallets (the ledger's lock order)."""
    if not inserted:
        return
    parts = {"CAPTURE": "captured", "RELEASE": "released", "REFUND": "refunded"}
    by_hold: dict = defaultdict(lambda: {"captured": 0, "released": 0, "refunded": 0})
    by_vendor: dict = defaultdict(lambda: [0, 0])
    debited = set()
    for entry in inserted:
        if entry["kind"] in parts:  # an ADJUSTMENT (Meta's dearer category) is the wallet's alone
            by_hold[entry["hold_id"]][parts[entry["kind"]]] += entry["amount_micros"]
        elif entry["balance_delta_micros"] < 0:
            debited.add(entry["vendor_id"])
        by_vendor[entry["vendor_id"]][0] += entry["balance_delta_micros"]
        by_vendor[entry["vendor_id"]][1] += entry["held_delta_micros"]
    hold_ids, vendor_ids, now = sorted(by_hold), sorted(by_vendor), utcnow()
    _apply_sums(conn, hold_ids, by_hold, vendor_ids, by_vendor, now)
    for row in conn.execute(select(WALLET).where(WALLET.c.vendor_id.in_(sorted(debited)))) if debited else ():
        alerts.watch(conn, row)  # a debit lowers available: it may cross the low-balance threshold


def _apply_sums(conn: Connection, hold_ids: list, by_hold: dict, vendor_ids: list, by_vendor: dict, now) -> None:
    parts = {"CAPTURE": "captured", "RELEASE": "released", "REFUND": "refunded"}
    if conn.dialect.name == "postgresql":
        if hold_ids:
            conn.execute(_HOLDS_PG, {"ids": [str(h) for h in hold_ids], "now": now,
                                     **{part: [by_hold[h][part] for h in hold_ids] for part in parts.values()}})
        conn.execute(_WALLETS_PG, {"vendor_ids": [str(v) for v in vendor_ids], "now": now,
                                   "balance": [by_vendor[v][0] for v in vendor_ids],
                                   "held": [by_vendor[v][1] for v in vendor_ids]})
        return
    if hold_ids:
        conn.execute(update(HOLD).where(HOLD.c.id == bindparam("h_id")).values(
            captured_micros=HOLD.c.captured_micros + bindparam("captured"),
            released_micros=HOLD.c.released_micros + bindparam("released"),
            refunded_micros=HOLD.c.refunded_micros + bindparam("refunded"), updated_at=now),
            [{"h_id": h, **by_hold[h]} for h in hold_ids])
    balance, held = bindparam("balance"), bindparam("held")
    conn.execute(update(WALLET).where(WALLET.c.vendor_id == bindparam("v_id")).values(
        balance_micros=WALLET.c.balance_micros + balance, held_micros=WALLET.c.held_micros + held,
        low_balance_flag=WALLET.c.low_balance_flag & (
            WALLET.c.balance_micros + balance - (WALLET.c.held_micros + held) < WALLET.c.low_balance_threshold_micros),
        updated_at=now), [{"v_id": v, "balance": by_vendor[v][0], "held": by_vendor[v][1]} for v in vendor_ids])
