"""The security policy: who is calling (a bearer access token) and what they may do.

The identity is computed once per request and cached by Pyramid. It re-reads the user,
and in the same query whether the token's session (``sid``, its refresh-token family) is
still open, so each of these ends the user's access tokens at once, not at expiry:

- sign-out and the reuse of a refresh token: the family is revoked, the session closed;
- a password change or reset, a disable, a role change: ``token_version`` is bumped (and
  every family revoked) by :func:`kloyst.auth.services.revoke_all_sessions`;
- a suspended vendor, a deleted user.

One query, not two: the session check is an ``EXISTS`` beside the user row the request
loads anyway (``refresh_token.family_id`` is indexed).

Permissions are plain strings checked here, never in views:

=================  =====================================================
``authenticated``  any signed-in user (including platform admins)
``vendor.member``  a user of a vendor (the default for every view)
``vendor.admin``   a vendor admin or owner
``vendor.owner``   the vendor's owner
``platform.admin`` a platform administrator
=================  =====================================================
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pyramid.security import NO_PERMISSION_REQUIRED, Allowed, Denied
from sqlalchemy import exists, select

from kloyst.accounts.models import Role, User, VendorStatus
from kloyst.auth.models import RefreshToken
from kloyst.auth.tokens import AccessClaims, ExpiredToken, InvalidToken
from kloyst.db import tenancy

PERMISSIONS = ("authenticated", "vendor.member", "vendor.admin", "vendor.owner", "platform.admin")
DEFAULT_PERMISSION = "vendor.member"


@dataclass(frozen=True)
class Identity:
    user: User
    claims: AccessClaims

    @property
    def user_id(self) -> uuid.UUID:
        return self.user.id

    @property
    def vendor_id(self) -> uuid.UUID | None:
        return self.user.vendor_id

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def is_platform_admin(self) -> bool:
        return self.user.is_platform_admin


def bearer_token(request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


_IDENTITY_CACHE = "kloyst.identity"
_REFUSAL = "kloyst.token_refusal"

# Why a bearer token was refused, for the 401 (kloyst.http.errors): a client refreshes an expired token and
# sends its user to sign in again for any other refusal.
TOKEN_MISSING = "missing"
TOKEN_EXPIRED = "expired"
TOKEN_INVALID = "invalid"  # malformed, not ours, or no longer valid (password reset, user disabled…)


def token_refusal(request) -> str | None:
    """Why this request has no identity (:data:`TOKEN_MISSING`, :data:`TOKEN_EXPIRED`, :data:`TOKEN_INVALID`);
    None when it has one."""
    if request.identity is not None:
        return None
    return request.environ.get(_REFUSAL, TOKEN_MISSING)


class KloystSecurityPolicy:
    def identity(self, request) -> Identity | None:
        # Pyramid asks the policy on every ``request.identity``; decode and load once per request.
        if _IDENTITY_CACHE not in request.environ:
            request.environ[_IDENTITY_CACHE] = self._load_identity(request)
        return request.environ[_IDENTITY_CACHE]

    def _load_identity(self, request) -> Identity | None:
        token = bearer_token(request)
        if token is None:
            return None
        request.environ[_REFUSAL] = TOKEN_INVALID
        try:
            claims = request.registry["kloyst.access_tokens"].decode(token)
        except ExpiredToken:
            request.environ[_REFUSAL] = TOKEN_EXPIRED
            return None
        except InvalidToken:
            return None
        if claims.session_id is None:
            return None
        session_open = exists().where(RefreshToken.family_id == claims.session_id,
                                      RefreshToken.user_id == User.id, RefreshToken.revoked_at.is_(None))
        with tenancy.unscoped(request.db):
            row = request.db.execute(select(User, session_open).where(User.id == claims.user_id)).one_or_none()
            if row is None:
                return None
            user, open_ = row
            if not open_ or user.disabled_at is not None or user.token_version != claims.token_version:
                return None
            if user.vendor_id != claims.vendor_id:
                return None
            if user.vendor is not None and user.vendor.status != VendorStatus.ACTIVE:
                return None
        del request.environ[_REFUSAL]
        return Identity(user=user, claims=claims)

    def authenticated_userid(self, request):
        identity = request.identity
        return str(identity.user_id) if identity else None

    def permits(self, request, context, permission):
        if permission == NO_PERMISSION_REQUIRED:
            return Allowed("public")
        identity = request.identity
        if identity is None:
            return Denied("not authenticated")
        if permission == "authenticated":
            return Allowed("authenticated")
        if permission == "platform.admin":
            return Allowed("platform admin") if identity.is_platform_admin else Denied("platform admins only")
        if permission.startswith("vendor."):
            if identity.vendor_id is None:
                return Denied("this route belongs to vendor users")
            try:
                needed = Role(permission.removeprefix("vendor."))
            except ValueError:
                return Denied(f"unknown permission {permission}")
            return Allowed(permission) if identity.role.rank >= needed.rank else Denied(
                f"requires the {needed.value} role")
        return Denied(f"unknown permission {permission}")

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


def _vendor_id(request) -> uuid.UUID | None:
    identity = request.identity
    return identity.vendor_id if identity else None


def _tenant_scope(request):
    """The tenant scope of this request's session: the caller's vendor, every vendor for platform admins."""
    identity = request.identity
    if identity is None:
        return tenancy.UNSET
    if identity.vendor_id is None:
        return tenancy.ALL_VENDORS if identity.is_platform_admin else tenancy.UNSET
    return identity.vendor_id


def includeme(config) -> None:
    config.set_security_policy(KloystSecurityPolicy())
    config.set_default_permission(DEFAULT_PERMISSION)
    config.add_request_method(_vendor_id, "vendor_id", reify=True)
    config.add_request_method(_tenant_scope, "tenant_scope", reify=True)
