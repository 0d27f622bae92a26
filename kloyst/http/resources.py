"""Route factories that turn ``{id}`` in a URL into a row, through tenant scoping.

A route declared with ``model=Contact`` loads ``Contact`` by the id in the URL before the
view runs, with the caller's tenant scope applied by :mod:`kloyst.db.tenancy`: another
vendor's id, a malformed id and a missing row are all the same 404. Views receive the row
as ``request.context`` and never look it up themselves.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from kloyst.errors import NotFound
from kloyst.http.errors import unauthenticated


def model_factory(model, key: str = "id"):
    label = getattr(model, "__api_name__", model.__name__)

    def factory(request):
        if request.identity is None:
            raise unauthenticated(request)
        try:
            ident = uuid.UUID(request.matchdict[key])
        except (KeyError, ValueError):
            raise NotFound(f"{label} not found") from None
        row = request.db.scalars(select(model).where(model.id == ident)).one_or_none()
        if row is None:
            raise NotFound(f"{label} not found")
        return row

    factory.model = model  # type: ignore[attr-defined]  # a function attribute: which model the factory loads
    return factory


def load_platform_row(request, model, label: str):
    """A platform row (not tenant-owned) named by ``{id}``, for a view on an admin route; a 404 if there is none.

    Admin routes carry no factory (``add_admin_route``): their views require ``platform.admin``
    first, so a vendor gets the 403 of an admin route before any lookup, and then load the row
    here. A malformed id and a missing row are the same 404, as on tenant routes.
    """
    try:
        ident = uuid.UUID(request.matchdict["id"])
    except (KeyError, ValueError):
        raise NotFound(f"{label} not found") from None
    row = request.db.get(model, ident)
    if row is None:
        raise NotFound(f"{label} not found")
    return row
