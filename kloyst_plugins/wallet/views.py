"""The wallet HTTP API: ``/v1/wallet`` for the vendor, ``/v1/admin/vendors/{id}/wallet`` for platform admins.

Every read and write goes through :class:`.ledger.Ledger` on the request session's connection,
so the request's transaction commits the movement and its wallet change together. Vendors read
their wallet (members) and set the low-balance threshold (owners and admins); only platform
admins move money in (top-ups, adjustments), always under a required ``Idempotency-Key``:
a retry answers with the original entry (``Idempotent-Replayed: true``) and moves nothing; the
same key with a different amount or kind is a 409. Client keys live in the ledger as
``api:<key>``, apart from the keys the platform makes itself (``msg:…``, a campaign's).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid

from pyramid.response import Response
from sqlalchemy import select

from kloyst.api import csv_chunks, format_micros, load_platform_row, openapi, Unprocessable, Vendor
from kloyst_plugins.wallet import statement
from kloyst_plugins.wallet.ledger import Entry, Ledger, WalletState
from kloyst_plugins.wallet.models import LedgerEntry
from kloyst_plugins.wallet.schemas import (AdjustmentBody, Moved, Range, TopupBody, TransactionPage, TransactionQuery,
                                           WalletAnswer, WalletPatch, end_of, required_idempotency_key, start_of)

REPLAYED_HEADER = "Idempotent-Replayed"


def wallet_json(state: WalletState) -> dict:
    return {"id": state.id, "currency": state.currency, "balance": format_micros(state.balance_micros),
            "held": format_micros(state.held_micros), "available": format_micros(state.available_micros),
            "low_balance_threshold": format_micros(state.low_balance_threshold_micros),
            "low_balance": state.low_balance}


def entry_json(entry: Entry | LedgerEntry) -> dict:
    return {"id": entry.id, "kind": entry.kind, "amount": format_micros(entry.amount_micros),
            "balance_change": format_micros(entry.balance_delta_micros),
            "held_change": format_micros(entry.held_delta_micros), "hold_id": entry.hold_id,
            "message_id": entry.message_id, "reference": entry.reference, "note": entry.note,
            "actor_user_id": entry.actor_user_id, "idempotency_key": entry.idempotency_key,
            "created_at": entry.created_at}


def ledger_for(request, vendor_id: uuid.UUID | None = None) -> Ledger:
    return Ledger(request.db.connection(), vendor_id or request.vendor_id)


def get_wallet(request):
    return {"wallet": wallet_json(ledger_for(request).wallet())}


def patch_wallet(request):
    body = request.validated()
    return {"wallet": wallet_json(ledger_for(request).set_low_balance_threshold(body.low_balance_threshold))}


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _after(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "seq":
            return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise Unprocessable("the cursor is not valid; use next_cursor from the previous page", code="invalid_cursor",
                        field="cursor")


def list_transactions(request):
    """Newest first, keyset on ``seq`` (the ledger's own order; ``created_at`` may tie)."""
    query = request.validated_query()
    statement_ = select(LedgerEntry)
    if query.kind is not None:
        statement_ = statement_.where(LedgerEntry.kind == query.kind.value)
    if (start := start_of(query.from_)) is not None:
        statement_ = statement_.where(LedgerEntry.created_at >= start)
    if (end := end_of(query.to)) is not None:
        statement_ = statement_.where(LedgerEntry.created_at < end)
    if query.cursor:
        statement_ = statement_.where(LedgerEntry.seq < _after(query.cursor))
    rows = list(request.db.scalars(statement_.order_by(LedgerEntry.seq.desc()).limit(query.limit + 1)))
    next_cursor = _cursor(rows[query.limit - 1].seq) if len(rows) > query.limit else None
    return {"items": [entry_json(row) for row in rows[: query.limit]], "next_cursor": next_cursor}


def statement_csv(request):
    query = request.validated_query()
    start, end = start_of(query.from_), end_of(query.to)
    if start is not None and end is not None and end <= start:
        raise Unprocessable("'to' must be after 'from'", details={"fields": [{"field": "to",
                                                                             "problem": "before 'from'"}]})
    currency = ledger_for(request).wallet().currency
    rows = statement.iter_rows(request.registry["kloyst.session_factory"], vendor_id=request.vendor_id,
                               currency=currency, start=start, end=end)
    # Drained by the server after this view returns: each batch is read in its own transaction.
    response = Response(app_iter=csv_chunks(statement.COLUMNS, rows, guarded=statement.FREE_TEXT),
                        content_type="text/csv", charset="utf-8")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    response.content_disposition = f'attachment; filename="wallet-statement-{stamp}.csv"'
    response.cache_control = "no-store"
    return response


def _vendor_id(request) -> uuid.UUID:
    return load_platform_row(request, Vendor, "vendor").id


def admin_get_wallet(request):
    return {"wallet": wallet_json(ledger_for(request, _vendor_id(request)).wallet())}


def _moved(request, ledger: Ledger, entry: Entry) -> dict:
    request.response.status_int = 201  # a replay answers as the original did
    if entry.replayed:
        request.response.headers[REPLAYED_HEADER] = "true"
    return {"entry": entry_json(entry), "wallet": wallet_json(ledger.wallet())}


def admin_topup(request):
    key = required_idempotency_key(request.headers)
    body = request.validated()
    ledger = ledger_for(request, _vendor_id(request))
    entry = ledger.topup(body.amount, idempotency_key=f"api:{key}", actor_user_id=request.identity.user_id,
                         note=body.note)
    return _moved(request, ledger, entry)


def admin_adjust(request):
    key = required_idempotency_key(request.headers)
    body = request.validated()
    ledger = ledger_for(request, _vendor_id(request))
    entry = ledger.adjust(body.amount, idempotency_key=f"api:{key}", actor_user_id=request.identity.user_id,
                          note=body.note)
    return _moved(request, ledger, entry)


def includeme(config) -> None:
    config.add_route("wallet.summary", "/wallet")
    config.add_view(get_wallet, route_name="wallet.summary", request_method="GET", renderer="json",
                    response_schema=WalletAnswer)
    config.add_view(patch_wallet, route_name="wallet.summary", request_method="PATCH", renderer="json",
                    permission="vendor.admin", body_schema=WalletPatch, response_schema=WalletAnswer)
    config.add_route("wallet.transactions", "/wallet/transactions")
    config.add_view(list_transactions, route_name="wallet.transactions", request_method="GET", renderer="json",
                    query_schema=TransactionQuery, response_schema=TransactionPage)
    config.add_route("wallet.statement", "/wallet/statement.csv")
    config.add_view(statement_csv, route_name="wallet.statement", request_method="GET", query_schema=Range,
                    openapi=openapi.download("text/csv"), rate_cost=10)
    # Platform admins: not gated (they belong to no vendor), platform.admin on every view (add_admin_route).
    config.add_admin_route("admin.wallet.vendor_wallet", "/admin/vendors/{id}/wallet")
    config.add_view(admin_get_wallet, route_name="admin.wallet.vendor_wallet", request_method="GET", renderer="json",
                    response_schema=WalletAnswer)
    config.add_admin_route("admin.wallet.topups", "/admin/vendors/{id}/wallet/topups")
    config.add_view(admin_topup, route_name="admin.wallet.topups", request_method="POST", renderer="json",
                    body_schema=TopupBody, response_schema=Moved, status=201,
                    openapi=openapi.idempotency(required=True))
    config.add_admin_route("admin.wallet.adjustments", "/admin/vendors/{id}/wallet/adjustments")
    config.add_view(admin_adjust, route_name="admin.wallet.adjustments", request_method="POST", renderer="json",
                    body_schema=AdjustmentBody, response_schema=Moved, status=201,
                    openapi=openapi.idempotency(required=True))
