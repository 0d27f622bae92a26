"""Every 4xx and 5xx is the same JSON envelope, and a crash never shows its insides to the client."""

import json
from pathlib import Path

import pytest
import webtest
from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst import make_configurator

SECRET_DETAIL = "db password is hunter2"


def assert_error_shape(response, status: int, code: str | None = None) -> dict:
    assert response.status_int == status
    assert response.content_type == "application/json"
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def _explode(request):
    raise RuntimeError(SECRET_DETAIL)


@pytest.fixture(scope="module")
def exploding_app(kloyst_settings, tmp_path_factory):
    """The real application plus one route whose view raises, built beside the shared test app."""
    config = make_configurator({"here": str(tmp_path_factory.mktemp("here"))}, dict(kloyst_settings), environ={})
    config.add_route("test.explode", "/test/explode")
    config.add_view(_explode, route_name="test.explode", renderer="json", permission=NO_PERMISSION_REQUIRED)
    app = webtest.TestApp(config.make_wsgi_app())
    yield app
    config.registry["kloyst.engine"].dispose()


def test_unknown_route_is_a_json_404(testapp):
    error = assert_error_shape(testapp.get("/v1/no-such-thing", status=404), 404, "not_found")
    assert "/v1/no-such-thing" in error["message"]


def test_wrong_method_on_an_existing_route_is_a_json_405_naming_the_allowed_methods(testapp):
    response = testapp.delete("/v1/auth/login", status=405)
    error = assert_error_shape(response, 405, "method_not_allowed")
    assert error["details"]["allowed"] == ["POST"]
    assert response.headers["Allow"] == "POST"


def test_get_route_called_with_post_lists_get_and_head(testapp):
    response = testapp.post("/healthz", status=405)
    assert_error_shape(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET, HEAD"


def test_malformed_percent_encoding_in_the_path_is_a_400_not_a_crash(testapp):
    assert_error_shape(testapp.get("/v1/auth/%ff%fe", status=400), 400, "bad_request")


def test_invalid_json_body_is_a_400(testapp):
    response = testapp.post("/v1/auth/login", '{"email": "a@b.c", ', content_type="application/json", status=400)
    error = assert_error_shape(response, 400, "bad_request")
    assert "not valid JSON" in error["message"]


def test_json_nested_too_deeply_is_a_400_not_a_crash(testapp):
    response = testapp.post("/v1/auth/login", "[" * 100_000, content_type="application/json", status=400)
    assert "nested too deeply" in assert_error_shape(response, 400, "bad_request")["message"]


def test_a_json_body_that_is_not_an_object_is_a_422(testapp):
    error = assert_error_shape(testapp.post_json("/v1/auth/login", [1, 2], status=422), 422, "validation_failed")
    assert error["details"]["fields"][0]["field"] == "(body)"


def test_non_json_content_type_is_a_415(testapp):
    response = testapp.post("/v1/auth/login", "email=a@b.c", content_type="application/x-www-form-urlencoded",
                            status=415)
    assert_error_shape(response, 415, "unsupported_media_type")


def test_schema_violation_is_a_422_listing_each_bad_field(testapp):
    response = testapp.post_json("/v1/auth/login", {"email": "not-an-email"}, status=422)
    error = assert_error_shape(response, 422, "validation_failed")
    fields = {item["field"] for item in error["details"]["fields"]}
    assert fields == {"email", "password"}
    assert all(item["problem"] for item in error["details"]["fields"])


def test_unknown_fields_are_refused_with_a_422_naming_them(testapp):
    body = {"email": "a@example.com", "password": "x", "is_platform_admin": True}
    error = assert_error_shape(testapp.post_json("/v1/auth/login", body, status=422), 422, "validation_failed")
    assert [item["field"] for item in error["details"]["fields"]] == ["is_platform_admin"]


def test_a_nul_character_anywhere_in_the_body_or_query_is_a_422_naming_the_field(testapp, owner, enable_plugin):
    body = {"vendor_name": "Acme", "email": "a@example.com", "password": "x" * 12, "name": "A\u0000B"}
    error = assert_error_shape(testapp.post_json("/v1/auth/signup", body, status=422), 422, "validation_failed")
    assert [item["field"] for item in error["details"]["fields"]] == ["name"]
    enable_plugin(owner, "contacts")
    error = testapp.get("/v1/contacts", {"label": ["ok", "b\x00d"]}, headers=owner.headers, status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "label.1"


def test_a_json_body_value_must_already_have_its_type_true_is_no_number_and_text_no_boolean(testapp, accounts):
    admin = accounts.platform_admin()
    body = {"ids": [1, True, "3"], "all": "true", "vendor_id": "00000000-0000-0000-0000-000000000001"}
    response = testapp.post_json("/v1/admin/outbox/dead/requeue", body, headers=admin.headers, status=422)
    error = assert_error_shape(response, 422, "validation_failed")
    # The UUID arrived as text and was accepted (JSON has no UUID type); the rest were read as what they are.
    assert sorted(item["field"] for item in error["details"]["fields"]) == ["all", "ids.1", "ids.2"]


def test_missing_bearer_token_is_a_json_401_with_a_challenge(testapp):
    response = testapp.get("/v1/auth/me", status=401)
    assert_error_shape(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_unexpected_exception_is_a_500_with_a_reference_and_no_internals(exploding_app):
    response = exploding_app.get("/test/explode", status=500)
    error = assert_error_shape(response, 500, "internal_error")
    reference = error["details"]["reference"]
    assert reference in error["message"]
    for leak in (SECRET_DETAIL, "RuntimeError", "Traceback", "_explode", ".py"):
        assert leak not in response.text


def test_unexpected_exception_is_logged_with_its_traceback_under_the_reference(exploding_app, registry):
    reference = exploding_app.get("/test/explode", status=500).json["error"]["details"]["reference"]
    records = [json.loads(line)
               for path in Path(registry.settings["kloyst.log.dir"]).glob("exception-*.log")
               for line in path.read_text().splitlines()]
    [record] = [r for r in records if r.get("reference") == reference]
    assert record["level"] == "ERROR"
    assert record["kind"] == "exception"
    assert "Traceback" in record["exception"]
    assert f"RuntimeError: {SECRET_DETAIL}" in record["exception"]
    assert record["path"] == "/test/explode"


def test_unexpected_500_still_carries_the_security_headers(exploding_app):
    response = exploding_app.get("/test/explode", headers={"Origin": "https://portal.example.com"}, status=500)
    for name in ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy",
                 "Strict-Transport-Security", "Referrer-Policy"):
        assert name in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == "https://portal.example.com"
