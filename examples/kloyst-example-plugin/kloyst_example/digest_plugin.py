"""The ``example_digest`` plugin: a summary of a vendor's notes, and a plugin that requires another.

``requires=("example",)`` means a vendor must enable ``example`` first, and cannot
disable ``example`` while this is on; Kloyst answers 409 either way. Its one route is
named ``example_digest.*``, the prefix every route of this plugin must carry.
"""

from __future__ import annotations

from pydantic import Field
from sqlalchemy import func, select

from kloyst.api import Answer, hookimpl, PluginMeta
from kloyst_example.models import Note

plugin_meta = PluginMeta(description="A count of the vendor's example notes.", requires=("example",),
                         kloyst_versions=">=0.2,<0.3")


class Summary(Answer):
    notes: int = Field(description="The vendor's notes.")
    pinged: int = Field(description="Those the ping task has reached.")


def summary(request):
    # Tenant scoping reaches count(*) too: this is the caller's vendor's count, never everyone's.
    notes = request.db.scalar(select(func.count()).select_from(Note))
    pinged = request.db.scalar(select(func.count()).select_from(Note).where(Note.pinged_at.is_not(None)))
    return {"notes": notes, "pinged": pinged}


@hookimpl
def kloyst_routes(config):
    config.add_route("example_digest.summary", "/example-digest/summary")
    config.add_view(summary, route_name="example_digest.summary", request_method="GET", renderer="json",
                    response_schema=Summary)


@hookimpl
def kloyst_example_import_note(event):
    # A hook the example plugin offers (its hookspecs.py); Kloyst checks this signature against it.
    if event.failed:
        return [f"Digest: {event.failed} rows need a look (GET /v1/imports/{event.import_id}/rejected.csv)."]
    return []
