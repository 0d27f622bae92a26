"""Every route is authenticated unless it is on the explicit public list, walked from the live route table."""

from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst.testing import route_walk

# The whole public surface. Adding to it is a decision: it belongs in review, not in a view.
PUBLIC_ROUTES = {
    "ops.healthz", "ops.readyz", "ops.openapi", "ops.docs",
    "auth.signup", "auth.verify_email", "auth.verify_email.resend", "auth.login", "auth.refresh", "auth.logout",
    "auth.password.forgot", "auth.password.reset",
    "auth.verify_email.page", "auth.password.reset.page",  # the pages mailed links open; the token is the authority
    "webhooks.whatsapp",  # Meta's callbacks: authenticated by X-Hub-Signature-256, not a bearer token
}


def _all_routes(registry):
    from pyramid.interfaces import IRoutesMapper

    return registry.queryUtility(IRoutesMapper).get_routes()


def test_only_the_listed_routes_are_public(registry):
    public = {route.name for route in _all_routes(registry)
              if NO_PERMISSION_REQUIRED in route_walk.route_permissions(registry, route.name)}
    assert public == PUBLIC_ROUTES


def test_every_other_route_refuses_an_anonymous_caller_with_401(testapp, registry):
    checked = 0
    for route in _all_routes(registry):
        if route.name in PUBLIC_ROUTES:
            continue
        for method in route_walk.route_methods(registry, route.name):
            path = route.generate({key: "00000000-0000-4000-8000-000000000001"
                                   for key in route_walk.placeholders(route)})
            response = testapp.request(path, method=method, expect_errors=True)
            assert response.status_int == 401, f"{method} {route.pattern} answered {response.status_int} anonymously"
            checked += 1
    assert checked >= 10
