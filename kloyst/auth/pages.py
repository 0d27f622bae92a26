"""The pages the links in Kloyst's mail open: confirm an email address, choose a (new) password.

Verification, password-reset and invitation mails link to ``{base}/verify-email?token=…`` and
``{base}/reset-password?token=…``. ``base`` is ``kloyst.mail.portal_url`` when a vendor portal
serves those pages (it then calls ``POST /v1/auth/verify-email`` and ``/v1/auth/password/reset``
itself), and Kloyst's own public URL otherwise, where these views answer: so a link works when
clicked on the embedded default, which has no portal.

Why a GET only shows a form and the POST acts: mail scanners and link previews fetch the links
in a message, and a GET that spent the one-time token would spend it before the person clicked.
The GET checks, without using it, that the token can still be used, so a dead link says so at
once. The POST is a plain HTML form (no script: the pages keep the API's strict
Content-Security-Policy, widened only to submit forms to this site) calling the same services
as the API routes, so single use, expiry, the password rules and the sessions ended by a reset
are the API's own. The form needs no CSRF token: it carries the one-time token, which is all the
authority it has. A refused form changes nothing (its transaction is doomed) and answers the
refusal's status (422, 429) with the reason in words.
"""

from __future__ import annotations

import base64
import hashlib
import html

from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst.auth import services, throttle
from kloyst.auth.models import OneTimePurpose
from kloyst.errors import ApiError, Unprocessable
from kloyst.mail import templates

# The one-time tokens Kloyst mails are 43 characters; these are the API's own bounds (kloyst.auth.views.TokenBody).
TOKEN_MIN, TOKEN_MAX = 10, 200
PASSWORD_MAX = 256

_STYLE = ("body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}"
          "label{display:block;margin:1rem 0 .25rem}input{font:inherit;width:100%;padding:.4rem;box-sizing:border-box}"
          "button{font:inherit;margin-top:1.25rem;padding:.5rem 1rem}.problem{color:#a40000}"
          "code{font:14px ui-monospace,monospace;background:#f4f4f4}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_CSP = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'")

_HTML = {"text/html": {"schema": {"type": "string"}}}
_TOKEN_SCHEMA = {"type": "string", "minLength": TOKEN_MIN, "maxLength": TOKEN_MAX}


def _page(title: str, body: str, status: int = 200, headers: dict | None = None) -> Response:
    response = Response(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} '
                        f'— Kloyst</title><meta name="viewport" content="width=device-width,initial-scale=1">'
                        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
                        status=status, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers.update(headers or {})
    response.cache_control = "no-store"  # the page holds a one-time token
    return response


def _paragraph(text: str, css: str | None = None) -> str:
    return f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>"


def _refused(request, title: str, exc: ApiError, then: str) -> Response:
    """The page of a refusal: nothing this request did is kept, and the person learns what to do next."""
    request.tm.doom()
    headers = {k: v for k, v in exc.headers.items() if k == "Retry-After"}
    return _page(title, _paragraph(exc.message, "problem") + _paragraph(then), exc.status, headers)


def _token(value) -> str:
    """The token of a link or form; a value no mailed token can have is refused before any look-up."""
    token = (value or "").strip() if isinstance(value, str) else ""
    if not TOKEN_MIN <= len(token) <= TOKEN_MAX:
        raise Unprocessable("this link is incomplete: open the link from the mail exactly as it was sent",
                            code="invalid_token", field="token")
    return token


def _usable(request, value, purpose: OneTimePurpose) -> str:
    token = _token(value)
    if not services.one_time_token_usable(request.db, token, purpose):
        raise Unprocessable("this link is invalid or has expired; request a new one", code="invalid_token",
                            field="token")
    return token


def _api(request, path: str) -> str:
    return f"POST {request.registry.settings['kloyst.api.prefix']}{path}"


def _new_verification_hint(request) -> str:
    return (f"To get a new link, send your email address to {_api(request, '/auth/verify-email/resend')} "
            '(a JSON body {"email": "you@example.com"}).')


def _new_reset_hint(request) -> str:
    return (f"To get a new link, send your email address to {_api(request, '/auth/password/forgot')} "
            '(a JSON body {"email": "you@example.com"}).')


def _hidden_token(token: str) -> str:
    return f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">'


def verify_email_page(request):
    """The page a verification link opens: one button confirms the address.

    Returns the form (200) while the token can still be used, else the reason (422).
    """
    title = "Confirm your email address"
    try:
        token = _usable(request, request.GET.get("token"), OneTimePurpose.VERIFY_EMAIL)
    except ApiError as exc:
        return _refused(request, title, exc, _new_verification_hint(request))
    form = (f'<form method="post" action="{html.escape(request.path, quote=True)}">{_hidden_token(token)}'
            '<button type="submit">Confirm my email address</button></form>')
    return _page(title, _paragraph("Press the button to confirm this address for your Kloyst account.")
                 + form)


def verify_email_submit(request):
    """Confirms the address the link was mailed to (the same rules as ``POST /v1/auth/verify-email``)."""
    title = "Confirm your email address"
    try:
        throttle.throttle_ip(request, "verify")
        user = services.verify_email(request.db, _token(request.POST.get("token")))
    except ApiError as exc:
        return _refused(request, title, exc, _new_verification_hint(request))
    return _page("Email address confirmed",
                 _paragraph(f"{user.email} is confirmed. You can now sign in.")
                 + f"<p>Sign in with <code>{html.escape(_api(request, '/auth/login'))}</code>.</p>")


def _password_form(request, token: str, problem: str | None = None) -> str:
    note = _paragraph(problem, "problem") if problem else ""
    return (f'{note}<form method="post" action="{html.escape(request.path, quote=True)}">{_hidden_token(token)}'
            f'<label for="password">New password (at least 10 characters)</label>'
            f'<input id="password" name="password" type="password" autocomplete="new-password" required '
            f'minlength="10" maxlength="{PASSWORD_MAX}">'
            '<label for="password_again">The same password again</label>'
            f'<input id="password_again" name="password_again" type="password" autocomplete="new-password" required '
            f'maxlength="{PASSWORD_MAX}">'
            '<button type="submit">Set my password</button></form>')


def reset_password_page(request):
    """The page a password-reset or invitation link opens: a form to choose the password.

    Returns the form (200) while the token can still be used, else the reason (422).
    """
    title = "Choose your password"
    try:
        token = _usable(request, request.GET.get("token"), OneTimePurpose.RESET_PASSWORD)
    except ApiError as exc:
        return _refused(request, title, exc, _new_reset_hint(request))
    return _page(title, _password_form(request, token))


def reset_password_submit(request):
    """Sets the password (the same rules as ``POST /v1/auth/password/reset``: every earlier session ends).

    A password the rules refuse, or two that differ, shows the form again (422) with the link still
    usable; a dead link shows why (422).
    """
    title = "Choose your password"
    password = request.POST.get("password")
    again = request.POST.get("password_again")
    try:
        throttle.throttle_ip(request, "password")
        token = _token(request.POST.get("token"))
        if not isinstance(password, str) or not password:
            raise Unprocessable("type the new password", field="password")
        if len(password) > PASSWORD_MAX:
            raise Unprocessable(f"the password must be at most {PASSWORD_MAX} characters", field="password")
        if password != again:
            raise Unprocessable("the two passwords differ: type the same password twice", field="password_again")
        user = services.reset_password(request.db, token, password)
    except ApiError as exc:
        if exc.code == "invalid_token" or exc.status != 422:
            return _refused(request, title, exc, _new_reset_hint(request))
        request.tm.doom()
        return _page(title, _password_form(request, token, exc.message), exc.status)
    return _page("Password set",
                 _paragraph(f"The password of {user.email} is set, and every session signed in before has ended.")
                 + f"<p>Sign in with <code>{html.escape(_api(request, '/auth/login'))}</code>.</p>")


def _form_body(fields: dict[str, dict], required: list[str]) -> dict:
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": required, "properties": fields}}}}


_PAGE_ANSWERS = {"200": {"description": "The page.", "content": _HTML},
                 "422": {"description": "The link is incomplete, used or expired, or the form is wrong: a page "
                                        "saying which.", "content": _HTML}}
_FORM_ANSWERS = {**_PAGE_ANSWERS, "429": {"description": "Too many attempts from this address: a page saying when "
                                                         "to try again.", "content": _HTML}}
_TOKEN_QUERY = [{"name": "token", "in": "query", "required": True, "schema": _TOKEN_SCHEMA,
                 "description": "The one-time token from the mailed link."}]
_RESET_FIELDS = {"token": _TOKEN_SCHEMA, "password": {"type": "string", "minLength": 1, "maxLength": PASSWORD_MAX},
                 "password_again": {"type": "string", "maxLength": PASSWORD_MAX}}
ROUTES = (("auth.verify_email.page", templates.VERIFY_PATH), ("auth.password.reset.page", templates.RESET_PATH))
VIEWS = (
    ("auth.verify_email.page", "GET", verify_email_page, {"parameters": _TOKEN_QUERY, "responses": _PAGE_ANSWERS}),
    ("auth.verify_email.page", "POST", verify_email_submit,
     {"requestBody": _form_body({"token": _TOKEN_SCHEMA}, ["token"]), "responses": _FORM_ANSWERS}),
    ("auth.password.reset.page", "GET", reset_password_page,
     {"parameters": _TOKEN_QUERY, "responses": _PAGE_ANSWERS}),
    ("auth.password.reset.page", "POST", reset_password_submit,
     {"requestBody": _form_body(_RESET_FIELDS, list(_RESET_FIELDS)), "responses": _FORM_ANSWERS}),
)


def includeme(config) -> None:
    """Registered outside the API prefix, at the paths the mailed links name."""
    for name, path in ROUTES:
        config.add_route(name, path)
    for name, method, view, openapi in VIEWS:
        config.add_view(view, route_name=name, request_method=method, permission=NO_PERMISSION_REQUIRED,
                        openapi=openapi)
