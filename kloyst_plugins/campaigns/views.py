"""The campaigns HTTP API, under ``/v1/campaigns``.

Enablement, tenancy and authentication are the core's: every route is gated on the plugin,
``model=Campaign`` loads ``{id}`` through tenant scoping (another vendor's campaign is a 404)
and members may use every route. Views translate HTTP; the rules live in :mod:`.drafts`,
:mod:`.launch`, :mod:`.control`, :mod:`.testsend` and :mod:`.stats`. Launch, retry-failed and
test-send accept an ``Idempotency-Key`` (a replay answers ``Idempotent-Replayed: true``).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from pyramid.response import Response
from sqlalchemy import select

from kloyst.api import csv_chunks, format_micros, idempotency_key, no_content, openapi, paginate
from kloyst_plugins.campaigns import control, drafts, launch, stats, testsend
from kloyst_plugins.campaigns.models import Campaign
from kloyst_plugins.campaigns.schemas import (CampaignAnswer, CampaignCreate, CampaignListQuery, CampaignPage,
                                              CampaignPatch, QuoteAnswer, RetryAnswer, StatsAnswer, TestSend)
from kloyst_plugins.messages.api import MessageAnswer
from kloyst_plugins.messages.api import Idempotency, MessageService, request_hash
from kloyst_plugins.messages.api import REPLAYED_HEADER, message_json
from kloyst_plugins.wallet.api import Ledger


def _schedule_json(campaign: Campaign) -> dict | None:
    if campaign.start_at is None:
        return None
    local = None
    try:
        local = campaign.start_at.astimezone(zoneinfo.ZoneInfo(campaign.timezone or "UTC")).isoformat()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    return {"start_at": campaign.start_at, "timezone": campaign.timezone, "local_start_at": local}


def _money(micros):
    return None if micros is None else format_micros(micros)


def campaign_json(campaign: Campaign) -> dict:
    return {"id": campaign.id, "name": campaign.name, "status": campaign.status, "template_id": campaign.template_id,
            "phone_number_id": campaign.phone_number_id, "audience": campaign.audience,
            "variables": campaign.variable_mapping, "buttons": campaign.buttons, "schedule": _schedule_json(campaign),
            "quotation_id": campaign.quotation_id, "category": campaign.category, "currency": campaign.currency,
            "held": _money(campaign.held_micros), "minimum_charge": _money(campaign.minimum_topup_micros),
            "recipients": campaign.recipients, "created_by": campaign.created_by,
            "launched_at": campaign.launched_at, "started_at": campaign.started_at, "paused_at": campaign.paused_at,
            "fan_out_completed_at": campaign.fanout_completed_at, "completed_at": campaign.completed_at,
            "cancelled_at": campaign.cancelled_at, "created_at": campaign.created_at,
            "updated_at": campaign.updated_at}


def quotation_json(quotation, available: int) -> dict:
    return {"id": quotation.id, "currency": quotation.currency, "category": quotation.category,
            "recipients": quotation.recipients, "subtotal": format_micros(quotation.subtotal_micros),
            "fees": format_micros(quotation.fees_micros),
            "minimum_charge": format_micros(quotation.minimum_topup_micros),
            "total": format_micros(quotation.total_micros), "expires_at": quotation.expires_at,
            "estimated_free_in_window": {"recipients": quotation.estimated_free_in_window,
                                         "amount": format_micros(quotation.estimated_free_in_window_micros)},
            "snapshot_id": quotation.snapshot_id, "status": quotation.status,
            "items": [{"country": i.country, "market": i.market, "quantity": i.quantity,
                       "unit_price": format_micros(i.unit_price_micros), "amount": format_micros(i.amount_micros)}
                      for i in quotation.items],
            "wallet": {"available": format_micros(available), "sufficient": available >= quotation.total_micros,
                       "shortfall": format_micros(max(0, quotation.total_micros - available))}}


def list_campaigns(request):
    query = request.validated_query()
    where = [Campaign.status == query.status.value] if query.status else []
    page = paginate(request.db, select(Campaign).where(*where), Campaign, query)
    return {"items": [campaign_json(c) for c in page.items], "next_cursor": page.next_cursor}


def create_campaign(request):
    body = request.validated()
    campaign = drafts.create(request.db, body, user_id=request.identity.user_id)
    request.response.status_int = 201
    return {"campaign": campaign_json(campaign)}


def get_campaign(request):
    return {"campaign": campaign_json(request.context)}


def patch_campaign(request):
    patch = request.validated()
    return {"campaign": campaign_json(drafts.update(request.db, request.context, patch))}


def delete_campaign(request):
    drafts.delete(request.db, request.context)
    return no_content(request)


def quote_campaign(request):
    campaign = request.context
    quotation = launch.quote(request.db, request.registry, campaign, enqueue=request.enqueue,
                             user_id=request.identity.user_id)
    available = Ledger(request.db.connection(), campaign.vendor_id).wallet().available_micros
    return {"campaign": campaign_json(campaign), "quotation": quotation_json(quotation, available)}


def launch_campaign(request):
    key = idempotency_key(request.headers)
    campaign, replayed = launch.launch(request.db, request.registry, request.context.id, enqueue=request.enqueue,
                                       idempotency_key=key)
    request.response.status_int = 202
    if replayed:
        request.response.headers[REPLAYED_HEADER] = "true"
    return {"campaign": campaign_json(campaign)}


def pause_campaign(request):
    return {"campaign": campaign_json(control.pause(request.db, request.context.id))}


def resume_campaign(request):
    return {"campaign": campaign_json(control.resume(request.db, request.context.id))}


def cancel_campaign(request):
    return {"campaign": campaign_json(control.cancel(request.db, request.context.id))}


def retry_failed(request):
    campaign, count = control.retry_failed(request.db, request.context.id,
                                           idempotency_key=idempotency_key(request.headers))
    return {"campaign": campaign_json(campaign), "requeued": count}


def test_send(request):
    body = request.validated()
    key = idempotency_key(request.headers)
    service = MessageService.for_request(request)
    idempotency = Idempotency(key, request_hash({**request.json_data, "campaign_id": str(request.context.id)})) \
        if key is not None else None
    queued = testsend.send(service, request.context, body.phone, idempotency=idempotency)
    request.response.status_int = 202
    if queued.replayed:
        request.response.headers[REPLAYED_HEADER] = "true"
    return {"message": message_json(queued.message, service)}


def campaign_stats(request):
    return {"stats": stats.stats(request.db, request.context)}


def export_recipients(request):
    campaign = request.context
    rows = stats.export_rows(request.registry["kloyst.session_factory"], vendor_id=campaign.vendor_id,
                             campaign_id=campaign.id, cipher=request.registry["kloyst.cipher"])
    # Drained by the server after this view returns: each batch is read in its own transaction.
    response = Response(app_iter=csv_chunks(stats.EXPORT_COLUMNS, rows), content_type="text/csv", charset="utf-8")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    response.content_disposition = f'attachment; filename="campaign-{campaign.id}-{stamp}.csv"'
    response.cache_control = "no-store"  # personal data: no shared or browser caches
    return response


# Launching, resuming and retrying spend the vendor's money (a hold, then messages): owners and admins only,
# as waba changes are. Members draft, quote, pause, cancel and test-send (a test send is paid like any API send).
SPENDS = "vendor.admin"
KEYED = openapi.idempotency()
ACTIONS = (("quote", quote_campaign, {"response_schema": QuoteAnswer}),
           ("launch", launch_campaign, {"permission": SPENDS, "status": 202, "openapi": KEYED,
                                        "response_schema": CampaignAnswer}),
           ("pause", pause_campaign, {"response_schema": CampaignAnswer}),
           ("resume", resume_campaign, {"permission": SPENDS, "response_schema": CampaignAnswer}),
           ("cancel", cancel_campaign, {"response_schema": CampaignAnswer}),
           ("test-send", test_send, {"body_schema": TestSend, "status": 202, "openapi": KEYED,
                                     "response_schema": MessageAnswer}),
           ("retry-failed", retry_failed, {"permission": SPENDS, "openapi": KEYED, "response_schema": RetryAnswer}))


def includeme(config) -> None:
    config.add_route("campaigns.collection", "/campaigns")
    config.add_view(list_campaigns, route_name="campaigns.collection", request_method="GET", renderer="json",
                    query_schema=CampaignListQuery, response_schema=CampaignPage)
    config.add_view(create_campaign, route_name="campaigns.collection", request_method="POST", renderer="json",
                    body_schema=CampaignCreate, response_schema=CampaignAnswer, status=201)
    config.add_route("campaigns.item", "/campaigns/{id}", model=Campaign)
    config.add_view(get_campaign, route_name="campaigns.item", request_method="GET", renderer="json",
                    response_schema=CampaignAnswer)
    config.add_view(patch_campaign, route_name="campaigns.item", request_method="PATCH", renderer="json",
                    body_schema=CampaignPatch, response_schema=CampaignAnswer)
    config.add_view(delete_campaign, route_name="campaigns.item", request_method="DELETE", renderer="json", status=204)
    for action, view, options in ACTIONS:
        name = f"campaigns.item.{action.replace('-', '_')}"
        config.add_route(name, f"/campaigns/{{id}}/{action}", model=Campaign)
        config.add_view(view, route_name=name, request_method="POST", renderer="json", **options)
    config.add_route("campaigns.item.stats", "/campaigns/{id}/stats", model=Campaign)
    config.add_view(campaign_stats, route_name="campaigns.item.stats", request_method="GET", renderer="json",
                    response_schema=StatsAnswer)
    config.add_route("campaigns.item.recipients", "/campaigns/{id}/recipients.csv", model=Campaign)
    config.add_view(export_recipients, route_name="campaigns.item.recipients", request_method="GET",
                    openapi=openapi.download("text/csv"), rate_cost=10)
