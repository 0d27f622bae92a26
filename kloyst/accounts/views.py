"""The caller's vendor and its users: read for members, managed by admins and owners.

The rules, all enforced here: only an owner makes, changes or removes an owner; a vendor
always keeps at least one active owner (checked under row locks, so two owners cannot
demote each other at once); nobody disables or removes themselves; a role change or a
disable ends the user's sessions; an invitation answers the same whether or not the address
already has an account, anywhere (:func:`kloyst.auth.services.invite_user`). Request bodies
are allow-listed schemas, so fields such as ``vendor_id`` or ``is_platform_admin`` are a 422,
never applied.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import EmailStr, Field
from sqlalchemy import select

from kloyst import events
from kloyst.accounts.models import Role, User
from kloyst.accounts.schemas import UserAnswer, UserPage, VendorAnswer
from kloyst.auth import services as auth_services
from kloyst.auth import throttle
from kloyst.auth.schemas import Acknowledged
from kloyst.auth.views import no_content, user_json, vendor_json
from kloyst.db import utcnow
from kloyst.errors import Conflict, Forbidden
from kloyst.http.pagination import Page, paginate
from kloyst.http.resources import model_factory
from kloyst.http.validation import PlainText, Schema


class VendorPatch(Schema):
    name: PlainText = Field(min_length=1, max_length=200)


class InviteBody(Schema):
    email: EmailStr
    name: PlainText = Field(default="", max_length=200)
    role: Literal["member", "admin", "owner"] = "member"


class UserPatch(Schema):
    name: PlainText | None = Field(default=None, max_length=200)
    role: Literal["member", "admin", "owner"] | None = None
    disabled: bool | None = None


def get_vendor(request):
    return {"vendor": vendor_json(request.identity.user.vendor)}


def patch_vendor(request):
    body = request.validated()
    vendor = request.identity.user.vendor
    vendor.name = body.name
    return {"vendor": vendor_json(vendor)}


def list_users(request):
    page = request.validated_query()
    rows = paginate(request.db, select(User), User, page)
    return {"items": [user_json(u) for u in rows.items], "next_cursor": rows.next_cursor}


def _may_grant(actor: User, role: Role) -> None:
    if role == Role.OWNER and actor.role != Role.OWNER:
        raise Forbidden("only an owner can make someone an owner", code="owner_required")


def _active_owner_ids(request) -> set[uuid.UUID]:
    """The active owners of the caller's vendor, their rows locked until commit.

    The lock makes "is this the last owner?" safe against two owners demoting each other at
    once: the second request waits for the first to commit, then reads the owners again.
    """
    query = (select(User.id).where(User.role == Role.OWNER, User.disabled_at.is_(None))
             .order_by(User.id).with_for_update())  # one lock order for everyone: no deadlock
    return set(request.db.scalars(query))


def _refuse_losing_last_owner(request, user: User) -> None:
    if user.role != Role.OWNER:
        return
    owners = _active_owner_ids(request)
    if user.id in owners and len(owners) <= 1:
        raise Conflict("a vendor needs at least one active owner; make someone else owner first", code="last_owner")


def invite_user(request):
    body = request.validated()
    actor = request.identity.user
    role = Role(body.role)
    _may_grant(actor, role)
    # Every invitation mails the address, whether or not it has an account: no mail-bombing one address.
    throttle.throttle_account(request, "invite", body.email)
    auth_services.invite_user(request.db, inviter=actor, email=body.email, name=body.name, role=role)
    # The same answer when the address already has an account, here or in another vendor: its owner gets a mail.
    request.response.status_int = 202
    return {"status": "we mailed the address an invitation"}


def patch_user(request):
    user: User = request.context
    actor = request.identity.user
    body = request.validated()
    if user.role == Role.OWNER and actor.role != Role.OWNER:
        raise Forbidden("only an owner can change an owner", code="owner_required")
    if (body.role is not None and body.role != "owner") or body.disabled is True:
        _refuse_losing_last_owner(request, user)
    if body.name is not None:
        user.name = body.name
    if body.role is not None and Role(body.role) != user.role:
        _may_grant(actor, Role(body.role))
        user.role = Role(body.role)
        auth_services.revoke_all_sessions(request.db, user)
        events.record(request.outbox, user.vendor_id, "UserRoleChanged", user_id=str(user.id), role=body.role)
    if body.disabled is not None and body.disabled != (user.disabled_at is not None):
        if user.id == actor.id:
            raise Conflict("you cannot disable yourself", code="self_disable")
        user.disabled_at = utcnow() if body.disabled else None
        auth_services.revoke_all_sessions(request.db, user)
    return {"user": user_json(user)}


def delete_user(request):
    user: User = request.context
    actor = request.identity.user
    if user.id == actor.id:
        raise Conflict("you cannot remove yourself; ask another owner or admin", code="self_delete")
    if user.role == Role.OWNER:
        if actor.role != Role.OWNER:
            raise Forbidden("only an owner can remove an owner", code="owner_required")
        _refuse_losing_last_owner(request, user)
    request.db.delete(user)
    events.record(request.outbox, user.vendor_id, "UserRemoved", user_id=str(user.id))
    return no_content(request)


def includeme(config) -> None:
    config.add_route("accounts.vendor", "/vendor")
    config.add_view(get_vendor, route_name="accounts.vendor", request_method="GET", renderer="json",
                    response_schema=VendorAnswer)
    config.add_view(patch_vendor, route_name="accounts.vendor", request_method="PATCH", renderer="json",
                    permission="vendor.admin", body_schema=VendorPatch, response_schema=VendorAnswer)
    config.add_route("accounts.users", "/vendor/users")
    config.add_view(list_users, route_name="accounts.users", request_method="GET", renderer="json", query_schema=Page,
                    response_schema=UserPage)
    config.add_view(invite_user, route_name="accounts.users", request_method="POST", renderer="json",
                    permission="vendor.admin", body_schema=InviteBody, response_schema=Acknowledged, status=202)
    config.add_route("accounts.user", "/vendor/users/{id}", factory=model_factory(User))
    config.add_view(patch_user, route_name="accounts.user", request_method="PATCH", renderer="json",
                    permission="vendor.admin", body_schema=UserPatch, response_schema=UserAnswer)
    config.add_view(delete_user, route_name="accounts.user", request_method="DELETE", renderer="json", status=204,
                    permission="vendor.admin")
