"""Route factories that turn ``{id}`` in a URL into a row, through tenant scoping.

A route declared with ``model=Contact`` loads ``Contact`` by the id in the URL before the
view runs, with the caller's tenant scope applied by :mod:`kloyst.db.tenancy`: another
vendor's id, a malformed id and a missing row are all the same 404. Views receive the row
as ``request.context`` and never look it up themselves.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from kloyst.errors import NotFound, Unauthorized


def model_factory(model, key: str = "id"):
    label = getattr(model, "__api_name__", model.__name__)

    def factory(request):
        if request.identity is None:
            raise Unauthorized()
        try:
            ident = uuid.UUID(request.matchdict[key])
        except (KeyError, ValueError):
            raise NotFound(f"{label} not found") from None
        row = request.db.scalars(select(model).where(model.id == ident)).one_or_none()
        if row is None:
            raise NotFound(f"{label} not found")
        return row

    factory.model = model
    return factory
