"""Processing-side views: PUT /imports/{id}/mapping, GET /imports/{id}/rejected.csv.

Thin on purpose: the mapping rules live in :mod:`.mapping` (shared with the CLI) and the
report in :mod:`.report`. ``request.context`` is the job, loaded through tenant scoping by
the route's ``model=``; the routes carry the imports plugin's gate.
"""

from __future__ import annotations

from pyramid.response import Response
from pyramid.view import view_config

from kloyst.http import openapi
from kloyst_plugins.contacts.merge import strategies_for
from kloyst_plugins.imports import mapping, report, services
from kloyst_plugins.imports.mapping import MappingBody
from kloyst_plugins.imports.schemas import ImportAnswer


@view_config(route_name="imports.item.mapping", request_method="PUT", renderer="json", body_schema=MappingBody,
             response_schema=ImportAnswer)
def put_mapping(request):
    job = request.context
    mapping.confirm_mapping(request.db, request.enqueue, job, request.validated(),
                            strategies_for(request.tenant_hooks))
    return {"import": services.job_json(job)}


@view_config(route_name="imports.item.rejected", request_method="GET", openapi=openapi.download("text/csv"))
def rejected_csv(request):
    job = request.context
    response = Response(content_type="text/csv", charset="utf-8")
    response.content_disposition = f'attachment; filename="import-{job.id}-rejected.csv"'
    response.app_iter = report.iter_report(request.registry["kloyst.session_factory"], job.vendor_id, job.id)
    return response
