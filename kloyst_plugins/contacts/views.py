"""The contacts HTTP API, under ``/v1/contacts``.

Enablement, tenancy and authentication are the core's: the configurator gates every route
on the plugin being enabled for the caller's vendor, ``model=Contact`` loads ``{id}``
through tenant scoping (another vendor's id is a 404), and views default to the
``vendor.member`` permission — members read and write contacts. Deleting by filter is the
one exception (it can empty an address book), so it requires ``vendor.admin``.

Views only translate HTTP: the rules live in :mod:`.services` (single contacts),
:mod:`.bulk` (set-based changes), :mod:`.filters` and :mod:`.export`.
"""

from __future__ import annotations

import datetime as dt

from pyramid.response import FileIter, Response
from sqlalchemy import select

from kloyst.api import csv_chunks, Forbidden, no_content, openapi, Page, paginate
from kloyst_plugins.contacts import bulk, export, filters
from kloyst_plugins.contacts.models import Contact, ContactAuditLog, ContactSource
from kloyst_plugins.contacts.schemas import (AuditPage, BulkAnswer, BulkBody, ContactAnswer, ContactCreate,
                                             ContactListQuery, ContactPage, ContactPatch, ExportQuery, OptChange)
from kloyst_plugins.contacts.services import Actor, ContactService, read_phone
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def contact_json(contact: Contact, service: ContactService) -> dict:
    return {"id": contact.id, "mobile": service.decrypt_mobile(contact), "bsuid": service.decrypt_bsuid(contact),
            "parent_bsuid": service.decrypt_parent_bsuid(contact), "username": service.decrypt_username(contact),
            "name": service.decrypt_name(contact),
            "country": contact.country, "calling_code": contact.calling_code, "labels": contact.labels or [],
            "attributes": contact.attributes or {}, "opted_out": contact.opted_out,
            "opted_out_at": contact.opted_out_at, "source": contact.source, "last_inbound_at": contact.last_inbound_at,
            "created_at": contact.created_at, "updated_at": contact.updated_at}


def audit_json(row: ContactAuditLog) -> dict:
    return {"id": row.id, "contact_id": row.contact_id, "action": row.action, "source": row.source,
            "actor_user_id": row.actor_user_id, "import_job_id": row.import_job_id, "changes": row.changes,
            "created_at": row.created_at}


def _actor(request) -> Actor:
    return Actor(source=ContactSource.API, user_id=request.identity.user_id)


def _where(request, flt) -> list:
    return filters.conditions(flt, vendor_id=request.vendor_id, hasher=request.registry["kloyst.mobile_hasher"],
                              dialect=request.db.get_bind().dialect.name)


def list_contacts(request):
    query = request.validated_query()
    service = ContactService.for_request(request)
    page = paginate(request.db, select(Contact).where(*_where(request, query)), Contact,
                    Page(cursor=query.cursor, limit=query.limit))
    return {"items": [contact_json(c, service) for c in page.items], "next_cursor": page.next_cursor}


def create_contact(request):
    body = request.validated()
    service = ContactService.for_request(request)
    phone = read_phone(body.mobile, body.default_country) if body.mobile is not None else None
    contact = service.create(phone, actor=_actor(request), name=body.name, labels=body.labels,
                             attributes=body.attributes, bsuid=body.bsuid, parent_bsuid=body.parent_bsuid,
                             username=body.username)
    request.response.status_int = 201
    return {"contact": contact_json(contact, service)}


def get_contact(request):
    return {"contact": contact_json(request.context, ContactService.for_request(request))}


def patch_contact(request):
    body = request.validated()
    service = ContactService.for_request(request)
    given = body.model_fields_set
    fields = {}
    if "mobile" in given and body.mobile is not None:
        fields["phone"] = read_phone(body.mobile, body.default_country)
    if "name" in given:
        fields["name"] = body.name
    if "labels" in given and body.labels is not None:
        fields["labels"] = body.labels
    if "attributes" in given and body.attributes is not None:
        fields["attributes"] = body.attributes
    for field in ("bsuid", "parent_bsuid", "username"):
        if field in given:
            fields[field] = getattr(body, field)
    service.update(request.context, actor=_actor(request), **fields)
    return {"contact": contact_json(request.context, service)}


def delete_contact(request):
    ContactService.for_request(request).delete(request.context, actor=_actor(request))
    return no_content(request)


def contact_audit(request):
    page = request.validated_query()
    query = select(ContactAuditLog).where(ContactAuditLog.contact_id == request.context.id)
    rows = paginate(request.db, query, ContactAuditLog, page)
    return {"items": [audit_json(r) for r in rows.items], "next_cursor": rows.next_cursor}


def opt_out(request):
    service = ContactService.for_request(request)
    changed = service.opt_out(request.context, actor=_actor(request))
    return {"contact": contact_json(request.context, service), "changed": changed}


def opt_in(request):
    service = ContactService.for_request(request)
    changed = service.opt_in(request.context, actor=_actor(request))
    return {"contact": contact_json(request.context, service), "changed": changed}


def bulk_action(request):
    body = request.validated()
    if body.action == "delete" and not request.has_permission("vendor.admin"):
        raise Forbidden("deleting contacts by filter requires the admin role", code="admin_required")
    result = bulk.apply(request.db, vendor_id=request.vendor_id, action=body.action, labels=body.labels,
                        where=_where(request, body.filter), actor=_actor(request))
    return {"action": body.action, **result.as_json()}


def export_contacts(request):
    query = request.validated_query()
    rows = export.iter_rows(request.registry["kloyst.session_factory"], vendor_id=request.vendor_id,
                            where=_where(request, query), cipher=request.registry["kloyst.cipher"])
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if query.format == "csv":
        # Drained by the server after this view returns: each batch is read in its own transaction.
        response = Response(app_iter=csv_chunks(export.COLUMNS, rows), content_type="text/csv", charset="utf-8")
    else:
        response = Response(app_iter=FileIter(export.write_xlsx(rows)),
                            content_type=XLSX_MEDIA_TYPE)
    response.content_disposition = f'attachment; filename="contacts-{stamp}.{query.format}"'
    response.cache_control = "no-store"  # personal data: no shared or browser caches
    return response


def includeme(config) -> None:
    config.add_route("contacts.collection", "/contacts")
    config.add_view(list_contacts, route_name="contacts.collection", request_method="GET", renderer="json",
                    query_schema=ContactListQuery, response_schema=ContactPage)
    config.add_view(create_contact, route_name="contacts.collection", request_method="POST", renderer="json",
                    body_schema=ContactCreate, response_schema=ContactAnswer, status=201)
    # Before /contacts/{id}, which would otherwise take "export" and "bulk" for ids.
    config.add_route("contacts.export", "/contacts/export")
    config.add_view(export_contacts, route_name="contacts.export", request_method="GET", query_schema=ExportQuery,
                    openapi=openapi.download("text/csv", XLSX_MEDIA_TYPE), rate_cost=10)
    config.add_route("contacts.bulk", "/contacts/bulk")
    config.add_view(bulk_action, route_name="contacts.bulk", request_method="POST", renderer="json",
                    body_schema=BulkBody, response_schema=BulkAnswer, rate_cost=10)
    config.add_route("contacts.item", "/contacts/{id}", model=Contact)
    config.add_view(get_contact, route_name="contacts.item", request_method="GET", renderer="json",
                    response_schema=ContactAnswer)
    config.add_view(patch_contact, route_name="contacts.item", request_method="PATCH", renderer="json",
                    body_schema=ContactPatch, response_schema=ContactAnswer)
    config.add_view(delete_contact, route_name="contacts.item", request_method="DELETE", renderer="json", status=204)
    config.add_route("contacts.item.audit", "/contacts/{id}/audit", model=Contact)
    config.add_view(contact_audit, route_name="contacts.item.audit", request_method="GET", renderer="json",
                    query_schema=Page, response_schema=AuditPage)
    config.add_route("contacts.item.opt_out", "/contacts/{id}/opt-out", model=Contact)
    config.add_view(opt_out, route_name="contacts.item.opt_out", request_method="POST", renderer="json",
                    response_schema=OptChange)
    config.add_route("contacts.item.opt_in", "/contacts/{id}/opt-in", model=Contact)
    config.add_view(opt_in, route_name="contacts.item.opt_in", request_method="POST", renderer="json",
                    response_schema=OptChange)
