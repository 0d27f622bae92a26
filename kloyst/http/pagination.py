"""Cursor pagination for every list: stable under inserts, no OFFSET scans, a hard maximum page size.

The cursor is an opaque token of the last row's ``(created_at, id)``; rows are returned
newest first.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import and_, or_

from kloyst.errors import Unprocessable
from kloyst.http.validation import Answer, Schema

MAX_LIMIT = 200
# An encoded cursor is about 100 characters; anything much longer is not one of ours.
MAX_CURSOR_LENGTH = 200


class Page(Schema):
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)


Item = TypeVar("Item", bound=BaseModel)


class Listing(Answer, Generic[Item]):
    """One page of a list: ``items`` newest first, and the cursor of the next page.

    Subclass it per list (``class ContactPage(Listing[ContactOut])``): the subclass's name and
    docstring are what the OpenAPI document shows.
    """

    items: list[Item]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


@dataclass
class PageResult:
    items: list
    next_cursor: str | None


def encode_cursor(created_at: dt.datetime, ident: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(ident)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ident = json.loads(raw)
        return dt.datetime.fromisoformat(created), uuid.UUID(ident)
    except (ValueError, TypeError) as exc:
        raise Unprocessable("the cursor is not valid; use next_cursor from the previous page",
                            code="invalid_cursor", field="cursor") from exc


def paginate(db, query, model, page: Page) -> PageResult:
    """Apply the cursor and limit to ``query`` (a select of ``model``) and return one page."""
    if page.cursor:
        created, ident = decode_cursor(page.cursor)
        query = query.where(or_(model.created_at < created, and_(model.created_at == created, model.id < ident)))
    rows = list(db.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(page.limit + 1)))
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return PageResult(rows, next_cursor)
