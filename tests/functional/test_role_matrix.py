"""The README's role matrix is the route table's: who may call each of Kloyst's routes, generated and checked.

Each row of the README table between ``<!-- role-matrix:start -->`` and ``<!-- role-matrix:end -->``
is rendered here from the live route table (every view of the core and of Kloyst's own plugins,
with its declared permission, the default ``vendor.member`` where none is declared) and from the
security policy's own ``permits`` asked for each role. A route added, removed, or given another
permission without the README changing fails this test, and the message is the table to paste.
A third party's routes are not in it: ``GET /v1/openapi.json`` gives every route's
``x-kloyst-permission``.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst.accounts.models import Role, User
from kloyst.auth.policy import DEFAULT_PERMISSION, Identity, KloystSecurityPolicy

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- role-matrix:start -->", "<!-- role-matrix:end -->"
OWN_PACKAGES = ("kloyst", "kloyst_plugins")
METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE")
_REGEX_PLACEHOLDER = re.compile(r"\{(\w+):[^}]*\}")


class _Caller:
    """What the policy reads of a request: the caller's identity (None: no token)."""

    def __init__(self, identity: Identity | None) -> None:
        self.identity = identity


def _identity(role: Role, *, platform_admin: bool = False) -> Identity:
    user = User(vendor_id=None if platform_admin else uuid.uuid4(), role=role, is_platform_admin=platform_admin)
    return Identity(user=user, claims=None)


# The matrix's columns, weakest first; each is a caller the policy is asked about.
ROLES = {
    "anyone": None,
    "member": _identity(Role.MEMBER),
    "admin": _identity(Role.ADMIN),
    "owner": _identity(Role.OWNER),
    "platform admin": _identity(Role.MEMBER, platform_admin=True),
}


def operations(registry) -> dict[tuple[str, str], str]:
    """``{(path, method): permission}`` for every view of the core and Kloyst's own plugins."""
    from pyramid.interfaces import IRoutesMapper

    patterns = {route.name: route.pattern for route in registry.queryUtility(IRoutesMapper).get_routes()}
    found: dict[tuple[str, str], str] = {}
    for entry in registry.introspector.get_category("views"):
        view = entry["introspectable"]
        module = getattr(view["callable"], "__module__", "") or ""
        if not view["route_name"] or module.split(".")[0] not in OWN_PACKAGES:
            continue
        related = [r for r in entry["related"] if r.category_name == "permissions"]
        permission = related[0]["value"] if related else DEFAULT_PERMISSION
        path = "/" + _REGEX_PLACEHOLDER.sub(r"{\1}", patterns[view["route_name"]]).lstrip("/")
        methods = view["request_methods"]
        methods = METHOD_ORDER if methods is None else (methods,) if isinstance(methods, str) else methods
        for method in methods:
            if method == "HEAD":
                continue
            previous = found.setdefault((path, method), permission)
            assert previous == permission, f"{method} {path} has views with two permissions: {previous}, {permission}"
    return found


def callers(permission: str) -> list[str]:
    """The matrix's columns the security policy lets call a view with ``permission``."""
    policy = KloystSecurityPolicy()
    return [role for role, identity in ROLES.items() if policy.permits(_Caller(identity), None, permission)]


def render(registry) -> str:
    """The README's table, rows by path and then method."""
    lines = ["| Route | " + " | ".join(ROLES) + " |", "|---|" + ":-:|" * len(ROLES)]
    for (path, method), permission in sorted(operations(registry).items(),
                                             key=lambda item: (item[0][0], METHOD_ORDER.index(item[0][1]))):
        allowed = callers(permission)
        lines.append(f"| `{method} {path}` | " + " | ".join("✓" if role in allowed else " " for role in ROLES) + " |")
    return "\n".join(lines)


def readme_table() -> str:
    text = README.read_text()
    assert START in text and END in text, f"the README has no role matrix between {START} and {END}"
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def test_the_readmes_role_matrix_is_the_route_tables(registry, wsgi_app):
    # wsgi_app: the configuration is committed, so every plugin's routes are in the table.
    expected, written = render(registry), readme_table()
    if written != expected:
        missing = sorted(set(expected.splitlines()) - set(written.splitlines()))
        stale = sorted(set(written.splitlines()) - set(expected.splitlines()))
        pytest.fail("the README's role matrix differs from the route table\n"
                    "rows the README lacks or has wrong:\n" + "\n".join(missing) +
                    "\nrows the README has and the route table does not:\n" + "\n".join(stale) +
                    f"\n\nthe table to put between {START} and {END}:\n{expected}")


def test_the_matrix_reads_the_policy_roles_weakest_first():
    assert callers(NO_PERMISSION_REQUIRED) == list(ROLES)
    assert callers("authenticated") == ["member", "admin", "owner", "platform admin"]
    assert callers("vendor.member") == ["member", "admin", "owner"]
    assert callers("vendor.admin") == ["admin", "owner"]
    assert callers("vendor.owner") == ["owner"]
    assert callers("platform.admin") == ["platform admin"]


@pytest.fixture
def callers_by_role(accounts, owner, db, testapp):
    """A vendor with every plugin on, and an account for each role of the matrix (None for anyone)."""
    from kloyst import testing

    for plugin in testapp.get("/v1/plugins", headers=owner.headers).json["items"]:
        if not plugin["enabled"]:
            testing.enable_plugin(db, owner.vendor_id, plugin["name"])
    member, admin = (accounts.user(owner.vendor, role=role) for role in (Role.MEMBER, Role.ADMIN))
    platform_admin = accounts.platform_admin()
    db.commit()
    return {"anyone": None, "member": member, "admin": admin, "owner": owner, "platform admin": platform_admin}


def test_each_permissions_callers_pass_the_policy_over_http_and_the_others_are_refused(registry, testapp,
                                                                                     callers_by_role):
    # One operation per permission (a GET where there is one): the permission alone decides, so one shows
    # how the wired application answers each role. Ids are random, bodies empty: an admitted caller gets
    # past the policy to a 404 or 422, a refused one gets 401 without a token and 403 with one.
    chosen: dict[str, tuple[str, str]] = {}
    for (path, method), permission in sorted(operations(registry).items(), key=lambda i: i[0][1] != "GET"):
        if permission != NO_PERMISSION_REQUIRED:
            chosen.setdefault(permission, (path, method))
    assert set(chosen) >= {"authenticated", "vendor.member", "vendor.admin", "platform.admin"}
    for permission, (path, method) in chosen.items():
        url = re.sub(r"\{\w+\}", str(uuid.uuid4()), path)
        allowed = callers(permission)
        for role, account in callers_by_role.items():
            headers = account.headers if account else {}
            status = testapp.request(url, method=method, headers=headers, expect_errors=True).status_int
            refused = 401 if account is None else 403
            if role in allowed:
                assert status not in (401, 403), f"{role} was refused {method} {path} ({permission}): {status}"
            else:
                assert status == refused, f"{role} got {status} for {method} {path} ({permission}), not {refused}"
