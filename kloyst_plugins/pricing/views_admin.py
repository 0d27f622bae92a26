"""The platform admins' pricing API: rate-card snapshots and fee rules under ``/v1/admin/pricing``.

Admin routes (``config.add_admin_route``): not gated by enablement, every view requires
``platform.admin``, so a vendor user gets 403. A snapshot is uploaded as Meta's own CSV
files (multipart ``pricing``, optional ``tiers``, ``effective_from``, ``note``); a file
with any bad row is refused whole with a 422 listing every problem and its line. A
snapshot can be deleted only while no quotation has used it (409 after).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from kloyst.api import format_micros, load_platform_row, openapi, Page, paginate, Unprocessable, Vendor
from kloyst_plugins.pricing import cards, snapshots
from kloyst_plugins.pricing.models import (PlatformFeeRule, PricingMarket, PricingRate, PricingSnapshot, PricingTier,
                                           snapshot_in_use)
from kloyst_plugins.pricing.schemas import (FeeRuleAnswer, FeeRuleCreate, FeeRulePage, FeeRulePatch, FeeRuleQuery,
                                            SnapshotAnswer, SnapshotPage)
from kloyst_plugins.pricing.views import percent


def snapshot_json(snapshot: PricingSnapshot, db, *, detail: bool = False) -> dict:
    answer = {"id": snapshot.id, "currency": snapshot.currency, "effective_from": snapshot.effective_from,
              "note": snapshot.note, "created_by": snapshot.created_by, "created_at": snapshot.created_at,
              "in_use": snapshot_in_use(db.connection(), snapshot.id)}
    if detail:
        rates: dict[str, dict] = {}
        for rate in db.scalars(select(PricingRate).where(PricingRate.snapshot_id == snapshot.id)
                               .order_by(PricingRate.market, PricingRate.category)):
            rates.setdefault(rate.market, {})[rate.category] = format_micros(rate.rate_micros)
        answer["rates"] = rates
        answer["tiers"] = [{"market": t.market, "category": t.category, "from": t.band_from, "to": t.band_to,
                            "rate_type": t.rate_type, "rate": format_micros(t.rate_micros),
                            "discount_percent": percent(t.discount_micropercent)}
                           for t in db.scalars(select(PricingTier).where(PricingTier.snapshot_id == snapshot.id)
                                               .order_by(PricingTier.market, PricingTier.category,
                                                         PricingTier.band_from))]
        answer["markets"] = {market: count for market, count in db.execute(
            select(PricingMarket.market, func.count()).where(PricingMarket.snapshot_id == snapshot.id)
            .group_by(PricingMarket.market).order_by(PricingMarket.market)).all()}
    return answer


def _file(request, name: str, *, required: bool) -> bytes | None:
    field = request.POST.get(name)
    if field is None or field == b"" or field == "":
        if required:
            raise Unprocessable(f"send the {name} file (multipart/form-data field {name!r})", code="missing_file",
                                details={"fields": [{"field": name, "problem": "missing"}]})
        return None
    if not hasattr(field, "file"):
        raise Unprocessable(f"{name} must be a file upload", details={"fields": [{"field": name,
                                                                                   "problem": "not a file"}]})
    return field.file.read()


def _effective_from(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.timezone.utc)
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Unprocessable("effective_from must be a date (2026-01-01) or a time with a zone",
                            details={"fields": [{"field": "effective_from", "problem": "not a date"}]}) from None
    if parsed.tzinfo is None:
        if len(value.strip()) > 10:
            raise Unprocessable("effective_from: give a time zone (2026-01-01T00:00:00Z) or a date",
                                details={"fields": [{"field": "effective_from", "problem": "no time zone"}]})
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed


def upload_snapshot(request):
    if not request.content_type.startswith("multipart/form-data"):
        raise Unprocessable("send the card as multipart/form-data: pricing (file), tiers (file, optional), "
                            "effective_from, note", code="multipart_required")
    pricing = _file(request, "pricing", required=True)
    tiers = _file(request, "tiers", required=False)
    effective_from = _effective_from(request.POST.get("effective_from"))
    note = (request.POST.get("note") or "").strip()[:500]
    try:
        snapshot = snapshots.create(request.db, pricing=pricing, tiers=tiers, effective_from=effective_from,
                                    note=note, created_by=request.identity.user_id)
    except cards.CardError as exc:
        # Each problem names its file field (pricing or tiers) and the line of that file.
        raise Unprocessable(f"the rate card has {len(exc.problems)} problem(s): {exc}", code="invalid_rate_card",
                            fields=[{"field": p["file"], "line": p["line"], "problem": p["problem"]}
                                    for p in exc.problems]) from None
    request.response.status_int = 201
    return {"snapshot": snapshot_json(snapshot, request.db, detail=True)}


def list_snapshots(request):
    page = paginate(request.db, select(PricingSnapshot), PricingSnapshot, request.validated_query())
    return {"items": [snapshot_json(s, request.db) for s in page.items], "next_cursor": page.next_cursor}


def get_snapshot(request):
    return {"snapshot": snapshot_json(load_platform_row(request, PricingSnapshot, "snapshot"), request.db, detail=True)}


def delete_snapshot(request):
    snapshot = load_platform_row(request, PricingSnapshot, "snapshot")
    request.db.delete(snapshot)  # refused with 409 once a quotation used it (models.refuse_if_used)
    request.db.flush()
    request.response.status_int = 204
    return request.response


def fee_rule_json(rule: PlatformFeeRule) -> dict:
    return {"id": rule.id, "vendor_id": rule.vendor_id, "name": rule.name, "currency": rule.currency,
            "markup_percent": percent(rule.markup_micropercent),
            "per_message_fee": format_micros(rule.per_message_fee_micros),
            "minimum_charge": format_micros(rule.minimum_charge_micros), "valid_from": rule.valid_from,
            "valid_to": rule.valid_to, "active": rule.active, "created_at": rule.created_at,
            "updated_at": rule.updated_at}


def _check_window(rule: PlatformFeeRule) -> None:
    if rule.valid_to is not None and rule.valid_to <= rule.valid_from:
        raise Unprocessable("valid_to must be after valid_from",
                            details={"fields": [{"field": "valid_to", "problem": "not after valid_from"}]})


def create_fee_rule(request):
    body = request.validated()
    if body.vendor_id is not None and request.db.get(Vendor, body.vendor_id) is None:
        raise Unprocessable(f"vendor {body.vendor_id} does not exist (leave vendor_id out for a global rule)",
                            details={"fields": [{"field": "vendor_id", "problem": "no such vendor"}]})
    rule = PlatformFeeRule(vendor_id=body.vendor_id, currency=body.currency, name=body.name or "",
                           markup_micropercent=body.micros("markup_percent") or 0,
                           per_message_fee_micros=body.micros("per_message_fee") or 0,
                           minimum_charge_micros=body.micros("minimum_charge") or 0,
                           valid_from=body.valid_from or dt.datetime.now(dt.timezone.utc), valid_to=body.valid_to,
                           active=True if body.active is None else body.active,
                           created_by=request.identity.user_id)
    _check_window(rule)
    request.db.add(rule)
    request.db.flush()
    request.response.status_int = 201
    return {"fee_rule": fee_rule_json(rule)}


def list_fee_rules(request):
    query = request.validated_query()
    statement = select(PlatformFeeRule)
    if query.vendor_id is not None:
        statement = statement.where(PlatformFeeRule.vendor_id == query.vendor_id)
    page = paginate(request.db, statement, PlatformFeeRule, query)
    return {"items": [fee_rule_json(r) for r in page.items], "next_cursor": page.next_cursor}


def get_fee_rule(request):
    return {"fee_rule": fee_rule_json(load_platform_row(request, PlatformFeeRule, "fee rule"))}


def patch_fee_rule(request):
    rule = load_platform_row(request, PlatformFeeRule, "fee rule")
    body = request.validated()
    for field, column in (("markup_percent", "markup_micropercent"), ("per_message_fee", "per_message_fee_micros"),
                          ("minimum_charge", "minimum_charge_micros")):
        if (micros := body.micros(field)) is not None:
            setattr(rule, column, micros)
    for field in ("name", "valid_from", "active"):
        if (value := getattr(body, field)) is not None:
            setattr(rule, field, value)
    if "valid_to" in body.model_fields_set:
        rule.valid_to = body.valid_to
    _check_window(rule)
    request.db.flush()
    return {"fee_rule": fee_rule_json(rule)}


def includeme(config) -> None:
    config.add_admin_route("admin.pricing.snapshots", "/admin/pricing/snapshots")
    config.add_view(upload_snapshot, route_name="admin.pricing.snapshots", request_method="POST", renderer="json",
                    response_schema=SnapshotAnswer, status=201, openapi=openapi.multipart(
                        {"pricing": "file: Meta's Pricing.csv"},
                        {"tiers": "file: Meta's Tier Pricing.csv",
                         "effective_from": "text: ISO date the card applies from",
                         "note": "text: a note for other admins (500 characters)"}))
    config.add_view(list_snapshots, route_name="admin.pricing.snapshots", request_method="GET", renderer="json",
                    query_schema=Page, response_schema=SnapshotPage)
    config.add_admin_route("admin.pricing.snapshot", "/admin/pricing/snapshots/{id}")
    config.add_view(get_snapshot, route_name="admin.pricing.snapshot", request_method="GET", renderer="json",
                    response_schema=SnapshotAnswer)
    config.add_view(delete_snapshot, route_name="admin.pricing.snapshot", request_method="DELETE", status=204)
    config.add_admin_route("admin.pricing.fee_rules", "/admin/pricing/fee-rules")
    config.add_view(create_fee_rule, route_name="admin.pricing.fee_rules", request_method="POST", renderer="json",
                    body_schema=FeeRuleCreate, response_schema=FeeRuleAnswer, status=201)
    config.add_view(list_fee_rules, route_name="admin.pricing.fee_rules", request_method="GET", renderer="json",
                    query_schema=FeeRuleQuery, response_schema=FeeRulePage)
    config.add_admin_route("admin.pricing.fee_rule", "/admin/pricing/fee-rules/{id}")
    config.add_view(get_fee_rule, route_name="admin.pricing.fee_rule", request_method="GET", renderer="json",
                    response_schema=FeeRuleAnswer)
    config.add_view(patch_fee_rule, route_name="admin.pricing.fee_rule", request_method="PATCH", renderer="json",
                    body_schema=FeeRulePatch, response_schema=FeeRuleAnswer)
