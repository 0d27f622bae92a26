"""Another vendor's id is a 404 on every route that takes an id, for every method: walked, not listed.

Routes are read from the live route table, so a route added later (by the core or any
installed plugin) is covered the moment it exists.
"""

import pytest
from sqlalchemy import inspect as sa_inspect

from kloyst.accounts.models import Role
from kloyst.testing import route_walk as walk

# Routes whose placeholder is not a tenant row id (a plugin name is public knowledge).
NOT_TENANT_IDS = {"plugins.item", "plugins.settings"}


def _enable_everything(db, registry, *vendor_ids):
    from kloyst.testing import enable_plugin

    pm = registry["kloyst.plugin_manager"]
    for vendor_id in vendor_ids:
        for name in pm.infos:
            if name not in pm.essential:
                enable_plugin(db, vendor_id, name)


def _snapshot(db, row):
    db.expire_all()
    mapper = sa_inspect(type(row))
    fresh = db.get(type(row), row.id)
    return None if fresh is None else {c.key: getattr(fresh, c.key) for c in mapper.column_attrs}


def test_every_id_route_loads_its_row_through_tenant_scoping(registry):
    unscoped = [r.name for r in walk.tenant_id_routes(registry)
                if r.name not in NOT_TENANT_IDS and not hasattr(r.factory, "model")]
    assert unscoped == [], (f"routes {unscoped} take an id but do not declare model=…; their rows would not be "
                            "loaded through tenant scoping")


def test_another_vendors_id_is_404_on_every_route_and_method(testapp, db, registry, accounts):
    vendor_a = accounts.vendor("A")
    vendor_b = accounts.vendor("B")
    _enable_everything(db, registry, vendor_a.vendor_id, vendor_b.vendor_id)
    db.commit()
    walked = 0
    for route in walk.tenant_id_routes(registry):
        if route.name in NOT_TENANT_IDS:
            continue
        model = route.factory.model
        for method in walk.route_methods(registry, route.name):
            foreign = walk.make_row(db, model, vendor_b.vendor_id, vendor_b.user.id)
            db.commit()
            before = _snapshot(db, foreign)
            path = route.generate({"id": str(foreign.id)})
            response = testapp.request(path, method=method, headers=vendor_a.headers, body=b"{}",
                                       content_type="application/json", expect_errors=True)
            assert response.status_int == 404, f"{method} {route.pattern} gave {response.status_int} for B's id"
            assert response.json["error"]["code"] == "not_found"
            assert str(foreign.id) not in response.text or "not found" in response.json["error"]["message"]
            assert _snapshot(db, foreign) == before, f"{method} {route.pattern} changed another vendor's row"
            walked += 1
    assert walked >= 2  # at least the core's user routes; plugins add more


def test_platform_admin_id_routes_are_closed_to_vendors(testapp, registry, accounts):
    owner = accounts.vendor("A")
    admin_only = [r for r in walk.id_routes(registry) if r not in walk.tenant_id_routes(registry)]
    for route in admin_only:
        for method in walk.route_methods(registry, route.name):
            path = route.generate({name: "1" for name in walk.placeholders(route)})
            response = testapp.request(path, method=method, headers=owner.headers,
                                       expect_errors=True)
            assert response.status_int == 403, f"{method} {route.pattern} gave {response.status_int} to a vendor"


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_own_vendor_id_reaches_the_view(testapp, db, accounts, method):
    """The walk above would pass vacuously if every id were 404: the caller's own row is found."""
    owner = accounts.vendor("A")
    member = accounts.user(owner.vendor, role=Role.MEMBER)
    response = testapp.request(f"/v1/vendor/users/{member.user.id}", method=method, headers=owner.headers,
                               body=b'{"name": "Renamed"}' if method == "PATCH" else b"",
                               content_type="application/json")
    assert response.status_int in (200, 204)
