"""The templates HTTP API, under ``/v1/templates``.

WABAs are named by their **Meta id** (``meta_waba_id``) everywhere in this API: it is the one
id that names the vendor's own WABAs and the platform's shared one alike, and the one Meta's
webhooks and the messages API use. A vendor may use a WABA it owns, or the shared WABA when
it has numbers from it (:func:`kloyst_plugins.waba.access.accessible_wabas`).

Enablement, tenancy and authentication are the core's (``model=MessageTemplate`` loads
``{id}`` through tenant scoping: another vendor's id is a 404); views default to the
``vendor.member`` permission. Submitting a template calls Meta within the request, because
the client needs Meta's verdict (or refusal) in the answer; syncing is queued (202).
"""

from __future__ import annotations

from sqlalchemy import select

from kloyst.api import Forbidden, Page, paginate, Unprocessable
from kloyst_plugins.templates import definition, parameters, services
from kloyst_plugins.templates.models import MessageTemplate, TemplateSync
from kloyst_plugins.templates.schemas import (SyncBody, SyncQueued, SyncStates, TemplateAnswer, TemplateCreate,
                                              TemplateListQuery, TemplatePage, VariableMappingBody)
from kloyst_plugins.templates.tasks import SYNC
from kloyst_plugins.waba.api import accessible_wabas


def template_json(template: MessageTemplate) -> dict:
    return {"id": template.id, "meta_waba_id": template.meta_waba_id, "meta_template_id": template.meta_template_id,
            "name": template.name, "language": template.language, "category": template.category,
            "status": template.status, "quality_score": template.quality_score,
            "parameter_format": template.parameter_format, "components": template.components,
            "header_variables": template.header_variables, "body_variables": template.body_variables,
            "button_variables": {str(i): v for i, v in parameters.button_variables(template.components).items()},
            "variable_mapping": template.variable_mapping, "rejected_reason": template.rejected_reason,
            "last_synced_at": template.last_synced_at, "created_at": template.created_at,
            "updated_at": template.updated_at}


def sync_json(record: TemplateSync) -> dict:
    return {"meta_waba_id": record.meta_waba_id, "last_attempt_at": record.last_attempt_at,
            "queued": record.queued_at is not None, "last_synced_at": record.last_synced_at,
            "template_count": record.template_count, "last_error": record.last_error}


def _unknown_waba(meta_waba_id: str) -> Unprocessable:
    return Unprocessable(f"meta_waba_id {meta_waba_id} is not a WABA you can use: add it, or ask for numbers of "
                         "the shared WABA", code="unknown_waba",
                         details={"fields": [{"field": "meta_waba_id", "problem": "not one of your WABAs"}]})


def list_templates(request):
    query = request.validated_query()
    statement = select(MessageTemplate)
    if query.status is not None:
        statement = statement.where(MessageTemplate.status == query.status.value)
    if query.category is not None:
        statement = statement.where(MessageTemplate.category == query.category.value)
    if query.language is not None:
        statement = statement.where(MessageTemplate.language == query.language)
    if query.meta_waba_id is not None:
        statement = statement.where(MessageTemplate.meta_waba_id == query.meta_waba_id)
    if query.name is not None:
        statement = statement.where(MessageTemplate.name.contains(query.name, autoescape=True))
    page = paginate(request.db, statement, MessageTemplate, Page(cursor=query.cursor, limit=query.limit))
    return {"items": [template_json(t) for t in page.items], "next_cursor": page.next_cursor}


def create_template(request):
    body = request.validated()
    problems = definition.check(body.category.value, body.parameter_format.value, body.components)
    if problems:
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        raise Unprocessable(f"the template cannot be submitted: {summary}", code="invalid_template",
                            details={"fields": problems})
    access = services.waba_access(request.db, request.registry["kloyst.cipher"], body.meta_waba_id)
    if access is None:
        raise _unknown_waba(body.meta_waba_id)
    if access.shared:
        # The shared WABA's templates are seen by every vendor sending from it, and its template quota is
        # everyone's: the platform curates them; vendors submit into their own WABAs.
        raise Forbidden(f"WABA {body.meta_waba_id} is the platform's shared WABA: its templates are managed by "
                        "the platform; submit templates to a WABA of your own", code="shared_waba_templates")
    template = services.submit(request.db, request.registry["kloyst.meta"], access, name=body.name,
                               language=body.language, category=body.category.value,
                               parameter_format=body.parameter_format.value, components=body.components)
    request.response.status_int = 201
    return {"template": template_json(template)}


def get_template(request):
    return {"template": template_json(request.context)}


def put_variable_mapping(request):
    body = request.validated()
    template = request.context
    problems = parameters.check_mapping(template, body.variable_mapping)
    if problems:
        raise Unprocessable(f"the variable mapping does not fit the template: {'; '.join(problems[:5])}",
                            code="invalid_variable_mapping",
                            fields=[{"field": "variable_mapping", "problem": problem} for problem in problems])
    template.variable_mapping = body.variable_mapping
    request.db.flush()  # so updated_at in the answer is the stored one
    return {"template": template_json(template)}


def request_sync(request):
    body = request.validated()
    wabas = [a.meta_waba_id for a in accessible_wabas(request.db, request.registry["kloyst.cipher"])]
    if body.meta_waba_id is not None:
        if body.meta_waba_id not in wabas:
            raise _unknown_waba(body.meta_waba_id)
        wabas = [body.meta_waba_id]
    if not wabas:
        raise Unprocessable("there is no WABA to sync templates from: add one first", code="no_waba")
    queued, already = [], []
    for meta_waba_id in wabas:
        if services.request_sync(request.db, request.vendor_id, meta_waba_id):
            request.enqueue(SYNC, vendor_id=request.vendor_id, meta_waba_id=meta_waba_id)
            queued.append(meta_waba_id)
        else:
            already.append(meta_waba_id)
    request.response.status_int = 202
    return {"queued": queued, "already_queued": already}


def sync_state(request):
    records = request.db.scalars(select(TemplateSync).order_by(TemplateSync.meta_waba_id))
    return {"items": [sync_json(r) for r in records]}


def includeme(config) -> None:
    config.add_route("templates.collection", "/templates")
    config.add_view(list_templates, route_name="templates.collection", request_method="GET", renderer="json",
                    query_schema=TemplateListQuery, response_schema=TemplatePage)
    config.add_view(create_template, route_name="templates.collection", request_method="POST", renderer="json",
                    body_schema=TemplateCreate, response_schema=TemplateAnswer, status=201)
    # Before /templates/{id}, which would otherwise take "sync" for an id.
    config.add_route("templates.sync", "/templates/sync")
    config.add_view(request_sync, route_name="templates.sync", request_method="POST", renderer="json",
                    body_schema=SyncBody, response_schema=SyncQueued, status=202, rate_cost=10)
    config.add_view(sync_state, route_name="templates.sync", request_method="GET", renderer="json",
                    response_schema=SyncStates)
    config.add_route("templates.item", "/templates/{id}", model=MessageTemplate)
    config.add_view(get_template, route_name="templates.item", request_method="GET", renderer="json",
                    response_schema=TemplateAnswer)
    config.add_route("templates.item.variable_mapping", "/templates/{id}/variable-mapping", model=MessageTemplate)
    config.add_view(put_variable_mapping, route_name="templates.item.variable_mapping", request_method="PUT",
                    renderer="json", body_schema=VariableMappingBody, response_schema=TemplateAnswer)
