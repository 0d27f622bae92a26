"""Request bodies over the limit are refused with a JSON 413, however the client frames them."""

import http.client
import io
import json

import pytest
import webob
import webtest
from pyramid.config import Configurator
from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst import make_configurator
from kloyst.config import ConfigurationError
from kloyst.runner import Stopper, start_http
from kloyst.serving import serve_in_background

SMALL_LIMIT = 1024
UPLOAD_LIMIT = 4096


def _body_size(request):
    return {"bytes": len(request.body)}


@pytest.fixture(scope="module")
def limited_app(kloyst_settings, tmp_path_factory):
    """An app with a 1 KiB default limit and a 4 KiB limit under /test/upload (via config.add_body_limit)."""
    settings = {**kloyst_settings, "kloyst.http.max_body_bytes": str(SMALL_LIMIT)}
    config = make_configurator({"here": str(tmp_path_factory.mktemp("here"))}, settings, environ={})
    config.add_body_limit("/test/upload", UPLOAD_LIMIT)
    config.add_body_limit("/test/exact", UPLOAD_LIMIT, exact=True)
    for name, pattern in (("test.upload", "/test/upload"), ("test.upload_other", "/test/upload-other"),
                          ("test.exact", "/test/exact"), ("test.exact_child", "/test/exact/child")):
        config.add_route(name, pattern)
        config.add_view(_body_size, route_name=name, renderer="json", permission=NO_PERMISSION_REQUIRED)
    yield webtest.TestApp(config.make_wsgi_app())
    config.registry["kloyst.engine"].dispose()


@pytest.fixture(scope="module")
def live_server(wsgi_app, registry):
    """The shared test app on a real waitress server on a free port, as `kloyst run` serves it."""
    server = start_http(wsgi_app, "127.0.0.1", 0, Stopper(), threads=2,
                        max_body_bytes=2 * registry.settings["kloyst.http.max_body_bytes"])
    stop = serve_in_background(server)
    yield server.effective_port
    stop()


def _chunks(payload: bytes, size: int = 8192):
    for start in range(0, len(payload), size):
        yield payload[start:start + size]


def post_chunked(port: int, path: str, payload: bytes) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        # A generator body with no Content-Length makes http.client send Transfer-Encoding: chunked.
        connection.request("POST", path, body=_chunks(payload), headers={"Content-Type": "application/json"},
                           encode_chunked=True)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def json_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes with an unknown field (so a body that gets through is a 422)."""
    skeleton = b'{"padding": ""}'
    return b'{"padding": "' + b"x" * (size - len(skeleton)) + b'"}'


def assert_too_large(status: int, content_type: str, body: bytes, limit: int) -> None:
    assert status == 413
    assert content_type.startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large"
    assert error["details"] == {"limit_bytes": limit}


def test_body_over_the_default_limit_is_a_json_413(testapp, registry):
    limit = registry.settings["kloyst.http.max_body_bytes"]
    response = testapp.post("/v1/auth/login", json_of_size(limit + 1), content_type="application/json", status=413)
    assert_too_large(response.status_int, response.content_type, response.body, limit)


def test_body_at_the_limit_is_accepted(testapp, registry):
    limit = registry.settings["kloyst.http.max_body_bytes"]
    response = testapp.post("/v1/auth/login", json_of_size(limit), content_type="application/json", status=422)
    assert [f["field"] for f in response.json["error"]["details"]["fields"]] == ["email", "password", "padding"]


def test_limit_comes_from_settings(limited_app):
    response = limited_app.post("/v1/auth/login", json_of_size(SMALL_LIMIT + 1), content_type="application/json",
                                status=413)
    assert response.json["error"]["details"] == {"limit_bytes": SMALL_LIMIT}


def test_add_body_limit_raises_the_limit_under_its_prefix(limited_app):
    assert limited_app.post("/test/upload", b"x" * UPLOAD_LIMIT).json == {"bytes": UPLOAD_LIMIT}
    too_big = limited_app.post("/test/upload", b"x" * (UPLOAD_LIMIT + 1), status=413)
    assert too_big.json["error"]["details"] == {"limit_bytes": UPLOAD_LIMIT}


def test_add_body_limit_covers_whole_path_segments_only(limited_app):
    response = limited_app.post("/test/upload-other", b"x" * (SMALL_LIMIT + 1), status=413)
    assert response.json["error"]["details"] == {"limit_bytes": SMALL_LIMIT}


def test_an_exact_body_limit_covers_its_path_and_nothing_below_it(limited_app):
    assert limited_app.post("/test/exact", b"x" * UPLOAD_LIMIT).json == {"bytes": UPLOAD_LIMIT}
    below = limited_app.post("/test/exact/child", b"x" * (SMALL_LIMIT + 1), status=413)
    assert below.json["error"]["details"] == {"limit_bytes": SMALL_LIMIT}


def test_the_import_mapping_keeps_the_ordinary_json_limit_beside_the_upload(registry):
    from kloyst.http.tweens import body_limit_for

    prefix = registry.settings["kloyst.api.prefix"]
    assert body_limit_for(registry, f"{prefix}/imports") > registry.settings["imports.max_upload_bytes"]
    assert body_limit_for(registry, f"{prefix}/imports/some-id/mapping") == registry.settings[
        "kloyst.http.max_body_bytes"]


def test_add_body_limit_refuses_a_relative_prefix():
    config = Configurator()
    config.include("kloyst.http.tweens")
    with pytest.raises(ConfigurationError, match="must start with /"):
        config.add_body_limit("v1/imports", 10)


def test_streamed_chunked_body_without_length_is_cut_at_the_limit(wsgi_app, registry):
    """A server that passes a chunked body through (no Content-Length) still gets the 413."""
    limit = registry.settings["kloyst.http.max_body_bytes"]
    request = webob.Request.blank("/v1/auth/login", method="POST", content_type="application/json")
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ.update({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True,
                            "wsgi.input": io.BytesIO(json_of_size(limit * 3))})
    response = request.get_response(wsgi_app)
    assert_too_large(response.status_int, response.content_type, response.body, limit)


def test_streamed_chunked_body_under_the_limit_reaches_the_view(wsgi_app):
    request = webob.Request.blank("/v1/auth/login", method="POST", content_type="application/json")
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ.update({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True,
                            "wsgi.input": io.BytesIO(b'{"email": "a@example.com", "password": "x", "zzz": 1}')})
    response = request.get_response(wsgi_app)
    assert response.status_int == 422
    assert [f["field"] for f in response.json["error"]["details"]["fields"]] == ["zzz"]


def test_chunked_body_over_the_limit_is_a_json_413_from_a_real_server(live_server, registry):
    limit = registry.settings["kloyst.http.max_body_bytes"]
    status, headers, body = post_chunked(live_server, "/v1/auth/login", json_of_size(limit + 100))
    assert_too_large(status, headers["Content-Type"], body, limit)
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_chunked_body_under_the_limit_works_on_a_real_server(live_server):
    status, _, body = post_chunked(live_server, "/v1/auth/login",
                                   b'{"email": "a@example.com", "password": "x", "zzz": 1}')
    assert status == 422
    assert [f["field"] for f in json.loads(body)["error"]["details"]["fields"]] == ["zzz"]


def test_real_server_refuses_a_body_far_beyond_every_limit_before_the_app(live_server, registry):
    limit = registry.settings["kloyst.http.max_body_bytes"]
    status, headers, _ = post_chunked(live_server, "/v1/auth/login", json_of_size(limit * 3))
    assert status == 413
    # waitress's own refusal (plain text), so the body was never buffered whole for the app.
    assert not headers.get("Content-Type", "").startswith("application/json")
