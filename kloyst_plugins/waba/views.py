"""The vendor's WABA API: ``/v1/wabas`` and ``/v1/phone-numbers``.

Enablement, tenancy and authentication are the core's: every route is gated on the plugin,
``model=`` loads ``{id}`` through tenant scoping (another vendor's WABA or number is a 404),
and views default to ``vendor.member``. Registering, changing and deleting a WABA handles
its access token, so those need ``vendor.admin``; members read and ask for a sync.

No response carries a token, encrypted or not: :func:`waba_json` says ``has_access_token``.
Syncs run after commit (``request.enqueue``), so a WABA's numbers are not listed the moment it
is registered: the answer says so (``sync``, a ``Location`` to poll and a ``next`` hint), and the
WABA's ``sync_status`` (queued → synced or failed), ``last_synced_at`` and ``last_sync_error``
tell how it went.

A sync costs Meta calls, so ``POST /wabas/{id}/sync`` queues one only when none is queued or
running for that WABA (:func:`request_sync`); asking again meanwhile answers the same 202 with
``already_queued``. The route's ``rate_cost`` makes each ask count as ten requests besides.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select, update

from kloyst.api import no_content, Page, paginate, utcnow

from kloyst_plugins.waba import services
from kloyst_plugins.waba.models import PhoneNumber, SharedPhoneNumber, SharedWaba, SyncStatus, Waba
from kloyst_plugins.waba.schemas import (PhoneNumberAnswer, PhoneNumberPage, PhoneNumberQuery, WabaAnswer, WabaCreate,
                                         WabaPage, WabaPatch, WabaSyncQueued)
from kloyst_plugins.waba.tasks import SYNC_PHONE_NUMBERS

ADMIN = {"permission": "vendor.admin", "renderer": "json"}


def waba_json(waba: Waba | SharedWaba) -> dict:
    data = {"id": waba.id, "meta_waba_id": waba.meta_waba_id, "name": waba.name,
            "has_access_token": waba.access_token_enc is not None, "last_synced_at": waba.last_synced_at,
            "last_sync_error": waba.last_sync_error, "sync_status": waba.sync_status, "created_at": waba.created_at,
            "updated_at": waba.updated_at}
    if isinstance(waba, Waba):
        data["business_id"] = waba.business_id
    return data


def phone_number_json(number: PhoneNumber) -> dict:
    return {"id": number.id, "meta_phone_number_id": number.meta_phone_number_id, "waba_id": number.waba_id,
            "shared": number.shared_waba_id is not None, "shared_waba_id": number.shared_waba_id,
            "display_phone_number": number.display_phone_number, "verified_name": number.verified_name,
            "quality_rating": number.quality_rating, "throughput_mps": number.throughput_mps,
            "status": number.status, "messaging_limit_tier": number.messaging_limit_tier,
            "last_synced_at": number.last_synced_at, "created_at": number.created_at,
            "updated_at": number.updated_at}


def shared_phone_number_json(number: SharedPhoneNumber) -> dict:
    return {"id": number.id, "shared_waba_id": number.shared_waba_id,
            "meta_phone_number_id": number.meta_phone_number_id,
            "display_phone_number": number.display_phone_number, "verified_name": number.verified_name,
            "quality_rating": number.quality_rating, "throughput_mps": number.throughput_mps,
            "status": number.status, "messaging_limit_tier": number.messaging_limit_tier,
            "assigned_vendor_id": number.assigned_vendor_id, "created_at": number.created_at,
            "updated_at": number.updated_at}


def queue_sync(request, row: Waba | SharedWaba, task: str, **ids) -> None:
    """Ask for a phone-number sync of ``row`` (run after commit) and show it as queued until it has run."""
    row.sync_status = SyncStatus.QUEUED.value
    request.enqueue(task, **ids)


# A sync still "queued" this long after it was asked for is presumed lost (its task dead-lettered after its
# retries, which back off up to 10 minutes each): asking again then queues another. Should the first still run,
# the two serialize on the WABA's row (sync.lock_for_sync), so a spare sync costs Meta calls, never an error.
REQUEUE_AFTER = dt.timedelta(minutes=15)


def request_sync(request, waba: Waba, task: str, **ids) -> bool:
    """Queue a sync of ``waba`` unless one is queued or running; True when this request queued it.

    One conditional UPDATE decides, so of many requests at once exactly one queues the task: on
    PostgreSQL the others wait for its row lock and then find ``queued``; on SQLite writers take turns.
    """
    now = utcnow()
    claimed = request.db.execute(
        update(Waba).where(Waba.id == waba.id, or_(Waba.sync_status != SyncStatus.QUEUED.value,
                                                   Waba.updated_at < now - REQUEUE_AFTER))
        .values(sync_status=SyncStatus.QUEUED.value, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    request.db.refresh(waba)
    if claimed:
        request.enqueue(task, **ids)
    return bool(claimed)


def queued(request, location: str, **ids) -> dict:
    """The 202 of a requested sync: ``Location`` is the WABA, whose ``sync_status`` says when it has run."""
    request.response.status_int = 202
    request.response.headers["Location"] = location
    return {**ids, "sync": "queued"}


def list_wabas(request):
    page = paginate(request.db, select(Waba), Waba, request.validated_query())
    return {"items": [waba_json(w) for w in page.items], "next_cursor": page.next_cursor}


def create_waba(request):
    body = request.validated()
    waba = services.create_waba(request.db, request.registry["kloyst.cipher"], vendor_id=request.vendor_id,
                                meta_waba_id=body.meta_waba_id, name=body.name, access_token=body.access_token,
                                business_id=body.business_id)
    queue_sync(request, waba, SYNC_PHONE_NUMBERS, waba_id=waba.id)
    location = request.route_path("waba.item", id=waba.id)
    request.response.status_int = 201
    request.response.headers["Location"] = location
    prefix = request.registry.settings["kloyst.api.prefix"]
    return {"waba": waba_json(waba), "sync": "queued",
            "next": f"its phone numbers are being synced from Meta in the background (usually within seconds): "
                    f"poll GET {location} until waba.sync_status is synced (failed: last_sync_error says why), "
                    f"then list them with GET {prefix}/phone-numbers?waba_id={waba.id}"}


def get_waba(request):
    return {"waba": waba_json(request.context)}


def patch_waba(request):
    body = request.validated()
    replaced = services.update_waba(request.registry["kloyst.cipher"], request.context, name=body.name,
                                    access_token=body.access_token)
    if replaced:  # the new token may fix what the old one could not
        queue_sync(request, request.context, SYNC_PHONE_NUMBERS, waba_id=request.context.id)
    request.db.flush()
    answer = {"waba": waba_json(request.context)}
    if replaced:
        answer["sync"] = "queued"
    return answer


def delete_waba(request):
    services.delete_waba(request.db, request.context)
    return no_content(request)


def sync_waba(request):
    waba = request.context
    fresh = request_sync(request, waba, SYNC_PHONE_NUMBERS, waba_id=waba.id)
    answer = queued(request, request.route_path("waba.item", id=waba.id), waba_id=waba.id)
    return {**answer, "already_queued": not fresh}


def list_phone_numbers(request):
    query = request.validated_query()
    statement = select(PhoneNumber)
    if query.waba_id is not None:
        statement = statement.where(PhoneNumber.waba_id == query.waba_id)
    if query.status is not None:
        statement = statement.where(PhoneNumber.status == query.status.upper())
    page = paginate(request.db, statement, PhoneNumber, query)
    return {"items": [phone_number_json(n) for n in page.items], "next_cursor": page.next_cursor}


def get_phone_number(request):
    return {"phone_number": phone_number_json(request.context)}


def includeme(config) -> None:
    config.add_route("waba.collection", "/wabas")
    config.add_view(list_wabas, route_name="waba.collection", request_method="GET", renderer="json", query_schema=Page,
                    response_schema=WabaPage)
    config.add_view(create_waba, route_name="waba.collection", request_method="POST", **ADMIN, body_schema=WabaCreate,
                    response_schema=WabaAnswer, status=201)
    config.add_route("waba.item", "/wabas/{id}", model=Waba)
    config.add_view(get_waba, route_name="waba.item", request_method="GET", renderer="json", response_schema=WabaAnswer)
    config.add_view(patch_waba, route_name="waba.item", request_method="PATCH", **ADMIN, body_schema=WabaPatch,
                    response_schema=WabaAnswer)
    config.add_view(delete_waba, route_name="waba.item", request_method="DELETE", status=204, **ADMIN)
    config.add_route("waba.item.sync", "/wabas/{id}/sync", model=Waba)
    config.add_view(sync_waba, route_name="waba.item.sync", request_method="POST", renderer="json", status=202,
                    response_schema=WabaSyncQueued, rate_cost=10)
    config.add_route("waba.phone_numbers", "/phone-numbers")
    config.add_view(list_phone_numbers, route_name="waba.phone_numbers", request_method="GET", renderer="json",
                    query_schema=PhoneNumberQuery, response_schema=PhoneNumberPage)
    config.add_route("waba.phone_number", "/phone-numbers/{id}", model=PhoneNumber)
    config.add_view(get_phone_number, route_name="waba.phone_number", request_method="GET", renderer="json",
                    response_schema=PhoneNumberAnswer)
    # The platform-admin routes (admin.waba.…), registered here so that this includeme is the
    # plugin's one list of routes: kloyst_routes includes .views and nothing else.
    config.include(".views_admin")
