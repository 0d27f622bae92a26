"""Every error the API answers has one shape, walked from the live route table.

Every operation (route and method, with the contract its view declared) is called anonymously,
with an expired token, with a token we never signed, and then, as a caller allowed in (a vendor
owner with every plugin on, or a platform admin for admin routes), with a body and a query its
declared schemas refuse. Every 4xx must be the envelope ``{"error": {"code", "message",
"details"}}``; a 401 must say whether to refresh or to sign in again; every 422 must list
``details.fields`` with no library's wording in it. A plugin's new route is covered by being
registered. The pages mailed links open answer HTML, as their contract declares, and are left to
their own tests.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from pyramid.interfaces import IRoutesMapper
from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst.http.validation import declared_contracts
from kloyst.testing import enable_plugin, route_walk

LIBRARY_WORDING = ("Value error,", "Assertion failed,", "pydantic", "Traceback")
ANY_ID = "00000000-0000-4000-8000-000000000001"


def _answers_html(contract) -> bool:
    return "text/html" in json.dumps(contract.openapi.get("responses", {}))


def operations(registry) -> list[tuple]:
    """``(method, path, permission, contract)`` of every JSON operation in the route table."""
    mapper = registry.queryUtility(IRoutesMapper)
    found = []
    for (route_name, _, methods), contract in declared_contracts(registry).items():
        if route_name is None or _answers_html(contract):
            continue
        route = mapper.get_route(route_name)
        path = route.generate({key: ANY_ID for key in route_walk.placeholders(route)})
        permissions = route_walk.route_permissions(registry, route_name)
        permission = NO_PERMISSION_REQUIRED if permissions == {NO_PERMISSION_REQUIRED} else (
            "platform.admin" if "platform.admin" in permissions else "vendor")
        for method in sorted(methods) or ["GET"]:
            found.append((method, path, permission, contract))
    return found


def assert_envelope(response, what: str) -> dict:
    assert response.content_type == "application/json", f"{what}: answered {response.content_type}"
    body = response.json
    assert set(body) == {"error"}, f"{what}: {body}"
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, f"{what}: {error}"
    assert isinstance(error["code"], str) and error["code"], what
    assert isinstance(error["message"], str) and error["message"], what
    assert isinstance(error["details"], dict), what
    for wording in LIBRARY_WORDING:
        assert wording not in json.dumps(error), f"{what}: {wording!r} leaks into {error}"
    if response.status_int == 422:
        fields = error["details"].get("fields")
        assert isinstance(fields, list), f"{what}: a 422 without details.fields: {error}"
        for item in fields:
            assert isinstance(item.get("field"), str) and isinstance(item.get("problem"), str), f"{what}: {item}"
    return error


@pytest.fixture
def callers(accounts, db, registry):
    owner = accounts.vendor("Shapes Co")
    for name in registry["kloyst.plugin_manager"].infos:
        enable_plugin(db, owner.vendor_id, name)
    admin = accounts.platform_admin()
    db.commit()
    return {"vendor": owner, "platform.admin": admin}


def _expired_token(registry, account) -> str:
    codec = registry["kloyst.access_tokens"]
    token, _ = codec.issue(user_id=account.user.id, vendor_id=account.vendor_id, role=account.user.role.value,
                           token_version=account.user.token_version,
                           now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))
    return token


def test_every_refusal_without_a_usable_token_is_a_401_saying_what_to_do_next(testapp, registry, callers):
    expired = _expired_token(registry, callers["vendor"])
    checked = 0
    for method, path, permission, _ in operations(registry):
        if permission == NO_PERMISSION_REQUIRED:
            continue
        for headers, code in (({}, "unauthorized"), ({"Authorization": f"Bearer {expired}"}, "token_expired"),
                              ({"Authorization": "Bearer not.a.token"}, "invalid_token")):
            response = testapp.request(path, method=method, headers=headers, expect_errors=True)
            what = f"{method} {path} ({code})"
            assert response.status_int == 401, f"{what}: answered {response.status_int}"
            assert assert_envelope(response, what)["code"] == code, what
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="kloyst"'), what
            checked += 1
    assert checked >= 3 * 90


def test_every_request_a_declared_schema_refuses_is_the_envelope_and_every_422_lists_its_fields(
        testapp, registry, callers):
    refused = {}
    for method, path, permission, contract in operations(registry):
        headers = callers.get(permission, callers["vendor"]).headers
        attempts = []
        if contract.body_schema is not None:
            attempts.append(("body", path, {"body": b'{"not_a_field": 1}', "content_type": "application/json"}))
        if contract.query_schema is not None:
            attempts.append(("query", f"{path}?not_a_field=1", {}))
        for kind, url, options in attempts:
            response = testapp.request(url, method=method, headers=headers, expect_errors=True, **options)
            what = f"{method} {path} with a bad {kind}"
            assert 400 <= response.status_int < 500, f"{what}: answered {response.status_int}: {response.text[:300]}"
            error = assert_envelope(response, what)
            if response.status_int == 422:
                assert error["details"]["fields"], f"{what}: a validation 422 names no field: {error}"
            refused[what] = response.status_int
    assert list(refused.values()).count(422) >= 40, refused


def test_a_validator_s_own_words_reach_the_client_without_the_library_s_prefix(testapp, callers):
    owner = callers["vendor"]
    response = testapp.get("/v1/contacts", {"created_from": "yesterday"}, headers=owner.headers, status=422)
    [field] = assert_envelope(response, "created_from")["details"]["fields"]
    assert field == {"field": "created_from",
                     "problem": "expected an ISO 8601 timestamp such as 2026-01-31T00:00:00Z"}


def test_a_422_for_no_single_field_still_has_an_empty_fields_list(testapp, callers):
    owner = callers["vendor"]
    response = testapp.post_json("/v1/templates/sync", {}, headers=owner.headers, status=422)
    error = assert_envelope(response, "templates sync without a WABA")
    assert error["code"] == "no_waba" and error["details"]["fields"] == []


def test_a_refused_one_time_token_names_the_token_field(testapp):
    response = testapp.post_json("/v1/auth/verify-email", {"token": uuid.uuid4().hex}, status=422)
    error = assert_envelope(response, "verify-email")
    assert error["code"] == "invalid_token"
    assert [f["field"] for f in error["details"]["fields"]] == ["token"]
