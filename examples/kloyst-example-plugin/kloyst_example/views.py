"""The example plugin's HTTP API, under ``/v1/example/``.

Nothing here checks enablement, tenancy or permissions: the configurator Kloyst hands to
``kloyst_routes`` gates every route on the plugin being enabled for the caller's vendor,
``model=Note`` loads ``{id}`` through tenant scoping (another vendor's note is 404), and
views default to the ``vendor.member`` permission.
"""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field
from sqlalchemy import select

from kloyst.api import Answer, Listing, Page, paginate, Schema
from kloyst_example.models import Note
from kloyst_example.tasks import PING_NOTE


class NoteBody(Schema):
    text: str = Field(min_length=1, max_length=2000)


class NoteOut(Answer):
    id: uuid.UUID
    text: str
    pinged_at: dt.datetime | None = Field(description="When the ping task last ran for it.")
    created_at: dt.datetime
    updated_at: dt.datetime


class NoteAnswer(Answer):
    note: NoteOut


class NotePage(Listing[NoteOut]):
    """The vendor's notes, newest first."""


class PingAnswer(Answer):
    note: NoteOut
    queued: bool = Field(description="The ping task is queued; it runs after this request commits.")


class Greeting(Answer):
    greeting: str = Field(description="The `example.greeting` setting.")


def note_json(note: Note) -> dict:
    return {"id": note.id, "text": note.text, "pinged_at": note.pinged_at, "created_at": note.created_at,
            "updated_at": note.updated_at}


def list_notes(request):
    page = paginate(request.db, select(Note), Note, request.validated_query())
    return {"items": [note_json(n) for n in page.items], "next_cursor": page.next_cursor}


def create_note(request):
    body = request.validated()
    note = Note(text=body.text)  # vendor_id is stamped from the caller's tenant scope
    request.db.add(note)
    request.db.flush()
    request.response.status_int = 201
    return {"note": note_json(note)}


def get_note(request):
    return {"note": note_json(request.context)}


def delete_note(request):
    request.db.delete(request.context)
    request.response.status_int = 204
    return request.response


def ping_note(request):
    note: Note = request.context
    # Sent to the queue only if this request's transaction commits.
    request.enqueue(PING_NOTE, vendor_id=note.vendor_id, note_id=note.id)
    request.response.status_int = 202
    return {"note": note_json(note), "queued": True}


def hello(request):
    return {"greeting": request.registry.settings["example.greeting"]}


def includeme(config) -> None:
    config.add_route("example.notes", "/example/notes")
    config.add_view(list_notes, route_name="example.notes", request_method="GET", renderer="json", query_schema=Page,
                    response_schema=NotePage)
    config.add_view(create_note, route_name="example.notes", request_method="POST", renderer="json",
                    body_schema=NoteBody, response_schema=NoteAnswer, status=201)
    config.add_route("example.note", "/example/notes/{id}", model=Note)
    config.add_view(get_note, route_name="example.note", request_method="GET", renderer="json",
                    response_schema=NoteAnswer)
    config.add_view(delete_note, route_name="example.note", request_method="DELETE", renderer="json",
                    permission="vendor.admin", status=204)
    config.add_route("example.note.ping", "/example/notes/{id}/ping", model=Note)
    config.add_view(ping_note, route_name="example.note.ping", request_method="POST", renderer="json", status=202,
                    response_schema=PingAnswer)
    config.add_route("example.hello", "/example/hello")
    config.add_view(hello, route_name="example.hello", request_method="GET", renderer="json",
                    response_schema=Greeting)
