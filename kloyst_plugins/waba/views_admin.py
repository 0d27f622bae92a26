"""The platform admins' shared-WABA API: ``/v1/admin/shared-wabas`` and ``/v1/admin/shared-phone-numbers``.

These are admin routes (``config.add_admin_route``): like the core's ``/v1/admin/…`` they
carry no plugin gate — admins belong to no vendor — and every view requires
``platform.admin``, so a vendor user gets 403 whatever it has enabled. Rows are platform
rows (no tenant), loaded here by id; an unknown or malformed id is a 404.

Assignment rules (who may get a number, what unassigning keeps) are :mod:`.services`'.
"""

from __future__ import annotations


from sqlalchemy import select

from kloyst.api import load_platform_row, Page, paginate
from kloyst_plugins.waba import services
from kloyst_plugins.waba.models import SharedPhoneNumber, SharedWaba
from kloyst_plugins.waba.schemas import (AssignBody, Assignment, SharedPhoneNumberPage, SharedPhoneNumberQuery,
                                         SharedWabaAnswer, SharedWabaCreate, SharedWabaPage, SharedWabaSyncQueued,
                                         WabaPatch)
from kloyst_plugins.waba.tasks import SYNC_SHARED_PHONE_NUMBERS
from kloyst_plugins.waba.views import phone_number_json, queue_sync, queued, shared_phone_number_json, waba_json


def list_shared_wabas(request):
    page = paginate(request.db, select(SharedWaba), SharedWaba, request.validated_query())
    return {"items": [waba_json(w) for w in page.items], "next_cursor": page.next_cursor}


def create_shared_waba(request):
    body = request.validated()
    shared = services.create_shared_waba(request.db, request.registry["kloyst.cipher"],
                                         meta_waba_id=body.meta_waba_id, name=body.name,
                                         access_token=body.access_token)
    queue_sync(request, shared, SYNC_SHARED_PHONE_NUMBERS, shared_waba_id=shared.id)
    request.response.status_int = 201
    request.response.headers["Location"] = request.route_path("admin.waba.shared_waba", id=shared.id)
    return {"shared_waba": waba_json(shared), "sync": "queued"}


def get_shared_waba(request):
    return {"shared_waba": waba_json(load_platform_row(request, SharedWaba, "shared waba"))}


def patch_shared_waba(request):
    shared = load_platform_row(request, SharedWaba, "shared waba")
    body = request.validated()
    replaced = services.update_waba(request.registry["kloyst.cipher"], shared, name=body.name,
                                    access_token=body.access_token)
    if replaced:
        queue_sync(request, shared, SYNC_SHARED_PHONE_NUMBERS, shared_waba_id=shared.id)
    request.db.flush()
    answer = {"shared_waba": waba_json(shared)}
    if replaced:
        answer["sync"] = "queued"
    return answer


def sync_shared_waba(request):
    shared = load_platform_row(request, SharedWaba, "shared waba")
    queue_sync(request, shared, SYNC_SHARED_PHONE_NUMBERS, shared_waba_id=shared.id)
    return queued(request, request.route_path("admin.waba.shared_waba", id=shared.id), shared_waba_id=shared.id)


def list_shared_phone_numbers(request):
    query = request.validated_query()
    statement = select(SharedPhoneNumber)
    if query.shared_waba_id is not None:
        statement = statement.where(SharedPhoneNumber.shared_waba_id == query.shared_waba_id)
    if query.assigned_vendor_id is not None:
        statement = statement.where(SharedPhoneNumber.assigned_vendor_id == query.assigned_vendor_id)
    if query.assigned is not None:
        column = SharedPhoneNumber.assigned_vendor_id
        statement = statement.where(column.is_not(None) if query.assigned else column.is_(None))
    page = paginate(request.db, statement, SharedPhoneNumber, query)
    return {"items": [shared_phone_number_json(n) for n in page.items], "next_cursor": page.next_cursor}


def assign_number(request):
    number = load_platform_row(request, SharedPhoneNumber, "shared phone number")
    body = request.validated()
    row = services.assign(request.db, number, body.vendor_id)
    return {"shared_phone_number": shared_phone_number_json(number), "phone_number": phone_number_json(row)}


def unassign_number(request):
    number = load_platform_row(request, SharedPhoneNumber, "shared phone number")
    row = services.unassign(request.db, number)
    return {"shared_phone_number": shared_phone_number_json(number),
            "phone_number": phone_number_json(row) if row is not None else None}


def includeme(config) -> None:
    config.add_admin_route("admin.waba.shared_wabas", "/admin/shared-wabas")
    config.add_view(list_shared_wabas, route_name="admin.waba.shared_wabas", request_method="GET", renderer="json",
                    query_schema=Page, response_schema=SharedWabaPage)
    config.add_view(create_shared_waba, route_name="admin.waba.shared_wabas", request_method="POST",
                    renderer="json", body_schema=SharedWabaCreate, response_schema=SharedWabaAnswer, status=201)
    config.add_admin_route("admin.waba.shared_waba", "/admin/shared-wabas/{id}")
    config.add_view(get_shared_waba, route_name="admin.waba.shared_waba", request_method="GET", renderer="json",
                    response_schema=SharedWabaAnswer)
    config.add_view(patch_shared_waba, route_name="admin.waba.shared_waba", request_method="PATCH",
                    renderer="json", body_schema=WabaPatch, response_schema=SharedWabaAnswer)
    config.add_admin_route("admin.waba.shared_waba.sync", "/admin/shared-wabas/{id}/sync")
    config.add_view(sync_shared_waba, route_name="admin.waba.shared_waba.sync", request_method="POST", status=202,
                    renderer="json", response_schema=SharedWabaSyncQueued)
    config.add_admin_route("admin.waba.shared_phone_numbers", "/admin/shared-phone-numbers")
    config.add_view(list_shared_phone_numbers, route_name="admin.waba.shared_phone_numbers", request_method="GET",
                    renderer="json", query_schema=SharedPhoneNumberQuery, response_schema=SharedPhoneNumberPage)
    config.add_admin_route("admin.waba.shared_phone_number.assign", "/admin/shared-phone-numbers/{id}/assign")
    config.add_view(assign_number, route_name="admin.waba.shared_phone_number.assign", request_method="POST",
                    renderer="json", body_schema=AssignBody, response_schema=Assignment)
    config.add_admin_route("admin.waba.shared_phone_number.unassign", "/admin/shared-phone-numbers/{id}/unassign")
    config.add_view(unassign_number, route_name="admin.waba.shared_phone_number.unassign", request_method="POST",
                    renderer="json", response_schema=Assignment)
