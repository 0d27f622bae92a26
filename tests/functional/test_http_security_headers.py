"""Security headers on every response, and CORS only for the origins on the allowlist.

(The headers on an unexpected 500 are checked in test_http_errors.py, which owns the crashing route.)
"""

import pytest

ALLOWED = "https://portal.example.com"  # kloyst.testing.TEST_SETTINGS
STRANGER = "https://evil.example.net"

EXPECTED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cache-Control": "no-store",
}


def assert_security_headers(response) -> None:
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def cors_headers(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


@pytest.mark.parametrize("path, status", [
    ("/healthz", 200),
    ("/v1/nowhere", 404),
    ("/v1/auth/me", 401),
])
def test_security_headers_on_success_and_error_responses(testapp, path, status):
    assert_security_headers(testapp.get(path, status=status))


def test_security_headers_on_a_validation_error(testapp):
    assert_security_headers(testapp.post_json("/v1/auth/login", {}, status=422))


def test_allowed_origin_is_echoed_with_vary_origin(testapp):
    response = testapp.get("/healthz", headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in response.headers["Vary"]
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]


def test_allowed_origin_gets_cors_headers_on_errors_too(testapp):
    response = testapp.get("/v1/auth/me", headers={"Origin": ALLOWED}, status=401)
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_preflight_from_allowed_origin_is_a_204_with_methods_and_headers(testapp):
    response = testapp.options("/v1/auth/login", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization"}, status=204)
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "Origin" in response.headers["Vary"]
    assert response.body == b""
    assert_security_headers(response)


def test_disallowed_origin_gets_no_cors_headers(testapp):
    response = testapp.get("/healthz", headers={"Origin": STRANGER})
    assert cors_headers(response) == {}
    assert_security_headers(response)


def test_preflight_from_disallowed_origin_gets_no_cors_headers(testapp):
    response = testapp.options("/v1/auth/login", headers={
        "Origin": STRANGER, "Access-Control-Request-Method": "POST"}, expect_errors=True)
    assert response.status_int >= 400
    assert cors_headers(response) == {}


def test_origin_matching_is_exact_not_a_prefix_or_suffix(testapp):
    for origin in (ALLOWED + ".evil.net", "http://portal.example.com", ALLOWED + "/", "null"):
        assert cors_headers(testapp.get("/healthz", headers={"Origin": origin})) == {}, origin


def test_cors_never_answers_with_a_wildcard(testapp):
    for origin in (ALLOWED, STRANGER, "*"):
        response = testapp.get("/healthz", headers={"Origin": origin})
        assert response.headers.get("Access-Control-Allow-Origin") != "*"
