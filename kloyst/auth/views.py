"""Auth routes: sign-up, verification, sign-in, refresh, sign-out, password reset, and who am I."""

from __future__ import annotations

from pydantic import EmailStr, Field
from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst.accounts.schemas import UserAnswer
from kloyst.auth import services, throttle
from kloyst.auth.schemas import Acknowledged, Me, PasswordReset, TokenPair
from kloyst.db import utcnow
from kloyst.errors import Unauthorized
from kloyst.http.errors import error_response
from kloyst.http.validation import PlainText, Schema

PUBLIC = {"permission": NO_PERMISSION_REQUIRED, "renderer": "json", "request_method": "POST"}


class SignupBody(Schema):
    vendor_name: PlainText = Field(min_length=1, max_length=200)
    name: PlainText = Field(min_length=1, max_length=200)
    email: EmailStr
    password: str = Field(min_length=1, max_length=256)


class TokenBody(Schema):
    token: str = Field(min_length=10, max_length=200)


class EmailBody(Schema):
    email: EmailStr


class LoginBody(Schema):
    email: EmailStr
    password: str = Field(min_length=1, max_length=256)


class RefreshBody(Schema):
    # Long enough for any string a client might mistake for a refresh token (an access JWT):
    # such a string fails the lookup and gets the refresh 401, not a confusing 422.
    refresh_token: str = Field(min_length=10, max_length=2048)


class PasswordChangeBody(Schema):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class ResetBody(Schema):
    token: str = Field(min_length=10, max_length=200)
    password: str = Field(min_length=1, max_length=256)


def user_json(user) -> dict:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "vendor_id": user.vendor_id,
        "is_platform_admin": user.is_platform_admin,
        "email_verified": user.email_verified_at is not None,
        "disabled": user.disabled_at is not None,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    }


def vendor_json(vendor) -> dict:
    return {"id": vendor.id, "name": vendor.name, "status": vendor.status, "created_at": vendor.created_at}


def signup(request):
    throttle.throttle_ip(request, "signup")
    body = request.validated()
    throttle.throttle_account(request, "signup", body.email)
    services.signup(request.db, request.registry.settings, vendor_name=body.vendor_name, name=body.name,
                    email=body.email, password=body.password)
    # The same answer whether the account was created or the address was taken (its owner gets a mail).
    request.response.status_int = 202
    return {"status": "we mailed the address a link: confirm it, then sign in"}


def verify_email(request):
    throttle.throttle_ip(request, "verify")
    body = request.validated()
    user = services.verify_email(request.db, body.token)
    return {"user": user_json(user)}


def resend_verification(request):
    throttle.throttle_ip(request, "verify")
    body = request.validated()
    throttle.throttle_account(request, "verify", body.email)
    services.send_verification(request.db, request.registry["kloyst.cipher"], body.email)
    request.response.status_int = 202
    return {"status": "if the address belongs to an unconfirmed account, a new link is on its way"}


def login(request):
    throttle.throttle_ip(request, "login")
    body = request.validated()
    throttle.throttle_sign_in(request, body.email)
    user = services.authenticate(request.db, body.email, body.password)
    # Only failures should use up this client's allowance: signing in on a sixth device is not an attack.
    throttle.forgive_sign_in(request, body.email)
    pair = services.issue_tokens(request.db, request.registry.settings, request.registry["kloyst.access_tokens"], user)
    return pair.as_json(utcnow())


def refresh(request):
    throttle.throttle_ip(request, "refresh")
    body = request.validated()
    pair = services.refresh(request.db, request.registry.settings, request.registry["kloyst.access_tokens"],
                            body.refresh_token)
    if pair is None:
        # Not raised: a reuse has just revoked the family, and that must commit.
        return error_response(request, Unauthorized("the refresh token is invalid, expired or already used; "
                                                     "sign in again", code="invalid_refresh_token"))
    return pair.as_json(utcnow())


def no_content(request):
    """An empty 204: no body and no Content-Type (a 204 with one is malformed HTTP)."""
    response = request.response
    response.status_int = 204
    response.content_type = None
    return response


def logout(request):
    body = request.validated()
    services.logout(request.db, body.refresh_token)
    return no_content(request)


def forgot_password(request):
    throttle.throttle_ip(request, "password")
    body = request.validated()
    throttle.throttle_account(request, "password", body.email)
    services.request_password_reset(request.db, request.registry["kloyst.cipher"], body.email)
    request.response.status_int = 202
    return {"status": "if the address belongs to an account, a reset link is on its way"}


def change_password(request):
    """A new password for the signed-in user: every session ends, and this device gets a fresh pair."""
    body = request.validated()
    user = request.identity.user
    # A stolen access token must not turn into a fast oracle for the password itself.
    throttle.throttle_sign_in(request, user.email)
    pair = services.change_password(request.db, request.registry.settings, request.registry["kloyst.access_tokens"],
                                    user, current=body.current_password, new=body.new_password)
    throttle.forgive_sign_in(request, user.email)
    return pair.as_json(utcnow())


def reset_password(request):
    throttle.throttle_ip(request, "password")
    body = request.validated()
    user = services.reset_password(request.db, body.token, body.password)
    return {"user": user_json(user), "next": "sign in with your new password"}


def me(request):
    identity = request.identity
    user = identity.user
    return {
        "user": user_json(user),
        "vendor": vendor_json(user.vendor) if user.vendor else None,
        "enabled_plugins": sorted(request.enabled_plugins),
        "token_expires_at": identity.claims.expires_at,
    }


ROUTES = [
    ("auth.signup", "/auth/signup", signup,
     {**PUBLIC, "body_schema": SignupBody, "response_schema": Acknowledged, "status": 202}),
    ("auth.verify_email", "/auth/verify-email", verify_email,
     {**PUBLIC, "body_schema": TokenBody, "response_schema": UserAnswer}),
    ("auth.verify_email.resend", "/auth/verify-email/resend", resend_verification,
     {**PUBLIC, "body_schema": EmailBody, "response_schema": Acknowledged, "status": 202}),
    ("auth.login", "/auth/login", login, {**PUBLIC, "body_schema": LoginBody, "response_schema": TokenPair}),
    ("auth.refresh", "/auth/refresh", refresh, {**PUBLIC, "body_schema": RefreshBody, "response_schema": TokenPair}),
    ("auth.logout", "/auth/logout", logout, {**PUBLIC, "body_schema": RefreshBody, "status": 204}),
    ("auth.password.forgot", "/auth/password/forgot", forgot_password,
     {**PUBLIC, "body_schema": EmailBody, "response_schema": Acknowledged, "status": 202}),
    ("auth.password.change", "/auth/password/change", change_password,
     {"permission": "authenticated", "renderer": "json", "request_method": "POST", "body_schema": PasswordChangeBody,
      "response_schema": TokenPair}),
    ("auth.password.reset", "/auth/password/reset", reset_password,
     {**PUBLIC, "body_schema": ResetBody, "response_schema": PasswordReset}),
    ("auth.me", "/auth/me", me, {"permission": "authenticated", "renderer": "json", "request_method": "GET",
                                 "response_schema": Me}),
]


def includeme(config) -> None:
    for name, pattern, view, options in ROUTES:
        config.add_route(name, pattern)
        config.add_view(view, route_name=name, **options)
