"""One JSON error shape for every 4xx and 5xx, and never a stack trace in a response.

``{"error": {"code": str, "message": str, "details": object}}``. Unexpected exceptions are
logged in full to the exception log with a reference id, and the client gets that id.
"""

from __future__ import annotations

import logging
import uuid

from pyramid.exceptions import PredicateMismatch, URLDecodeError
from pyramid.httpexceptions import HTTPException

from kloyst.auth.policy import TOKEN_EXPIRED, TOKEN_INVALID, token_refusal
from kloyst.errors import ApiError, Unauthorized
from kloyst.http import request_path

log = logging.getLogger("kloyst.exception")


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


def _respond(request, status: int, code: str, message: str, details=None, headers=None):
    response = request.response
    response.status_int = status
    response.headers.update(headers or {})
    response.content_type = "application/json"
    response.json_body = error_body(code, message, details)
    return response


def api_error_view(exc: ApiError, request):
    return _respond(request, exc.status, exc.code, exc.message, exc.details, exc.headers)


def error_response(request, exc: ApiError):
    """Render ``exc`` as the response *without raising*, so the transaction still commits.

    For the rare refusal that must persist a change (revoking a refresh-token family on
    reuse): raising would roll the revocation back.
    """
    return api_error_view(exc, request)


def allowed_methods(request) -> list[str] | None:
    """The methods the matched route's views accept, or None when one of them accepts any method.

    Read from the introspector once per route and cached on the registry.
    """
    name = request.matched_route.name
    cache = request.registry.setdefault("kloyst.allowed_methods", {})
    if name not in cache:
        introspector = request.registry.introspector
        route = introspector.get("routes", name)
        methods: set[str] = set()
        every_method = False
        for view in introspector.related(route) if route is not None else ():
            if view.category_name != "views":
                continue
            if view["request_methods"] is None:
                every_method = True
                break
            declared = view["request_methods"]
            declared = {declared} if isinstance(declared, str) else set(declared)
            methods.update(declared | ({"HEAD"} if "GET" in declared else set()))
        cache[name] = None if every_method else sorted(methods)
    return cache[name]


def not_found_view(exc, request):
    # A route matched but none of its views took the method: that is a 405, not a 404. Routes
    # hidden by a route predicate (a plugin the vendor has not enabled) never match, so they
    # stay 404 and reveal nothing.
    if isinstance(exc, PredicateMismatch) and request.matched_route is not None:
        allowed = allowed_methods(request)
        if allowed and request.method not in allowed:
            return _respond(request, 405, "method_not_allowed",
                            f"{request.method} is not allowed on {request_path(request)}; use {', '.join(allowed)}",
                            {"allowed": allowed}, headers={"Allow": ", ".join(allowed)})
    return _respond(request, 404, "not_found", f"no resource at {request.method} {request_path(request)}")


def url_decode_error_view(exc, request):
    return _respond(request, 400, "bad_request", "the URL is not valid UTF-8 once percent-decoded")


def unauthenticated(request) -> Unauthorized:
    """The 401 for a request without a usable token, saying what to do next: refresh an expired token, sign in
    again after any other refusal, or send a token at all (the challenge's ``error`` says the same, RFC 6750 §3)."""
    prefix = request.registry.settings["kloyst.api.prefix"]
    refusal = token_refusal(request)
    if refusal == TOKEN_EXPIRED:
        return Unauthorized(f"the access token has expired: get a new one with POST {prefix}/auth/refresh and your "
                            f"refresh token, or sign in again with POST {prefix}/auth/login", code="token_expired",
                            headers={"WWW-Authenticate": 'Bearer realm="kloyst", error="invalid_token", '
                                                         'error_description="the access token expired"'})
    if refusal == TOKEN_INVALID:
        return Unauthorized("the access token is not valid (malformed, not issued here, or ended by a password "
                            "change, a sign-out everywhere or a disabled account): sign in again with POST "
                            f"{prefix}/auth/login", code="invalid_token",
                            headers={"WWW-Authenticate": 'Bearer realm="kloyst", error="invalid_token"'})
    return Unauthorized(f"authentication required: send Authorization: Bearer <access token> (from POST "
                        f"{prefix}/auth/login)")


def forbidden_view(exc, request):
    if request.identity is None:
        return api_error_view(unauthenticated(request), request)
    reason = getattr(exc.result, "msg", None) or str(getattr(exc, "result", "") or "")
    return _respond(request, 403, "forbidden", f"not allowed: {reason}" if reason else "not allowed")


def http_exception_view(exc: HTTPException, request):
    if exc.code < 400:  # a raised redirect or success is a response, not an error
        return exc
    code = exc.title.lower().replace(" ", "_") if exc.title else "error"
    return _respond(request, exc.code, code, exc.explanation or exc.title, headers={
        k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "Location")})


def unexpected_error_view(exc: Exception, request):
    reference = uuid.uuid4().hex[:12]
    log.error("unhandled error %s on %s %s", reference, request.method, request_path(request), exc_info=exc,
              extra={"reference": reference, "method": request.method, "path": request_path(request),
                     "request_id": getattr(request, "request_id", None)})
    return _respond(request, 500, "internal_error",
                    f"something went wrong on our side; quote reference {reference} when reporting it",
                    {"reference": reference})


def includeme(config) -> None:
    options = {"renderer": "json"}
    config.add_exception_view(api_error_view, context=ApiError, **options)
    config.add_notfound_view(not_found_view, renderer="json")
    config.add_forbidden_view(forbidden_view, renderer="json")
    config.add_exception_view(http_exception_view, context=HTTPException, **options)
    config.add_exception_view(url_decode_error_view, context=URLDecodeError, **options)
    config.add_exception_view(unexpected_error_view, context=Exception, **options)
