"""The caller's vendor and its users: who may read, invite, change and remove whom (OWASP API3/API5).

Rules under test: members read; admins manage but cannot create or touch owners; a vendor
always keeps an active owner; nobody disables or removes themselves; a role change ends
the user's sessions; unknown fields are refused, never silently ignored or applied.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import webtest
from sqlalchemy import func, select

from kloyst import testing
from kloyst.accounts import views as account_views
from kloyst.accounts.models import Role, User
from kloyst.db import tenancy, utcnow
from kloyst.testing import TEST_PASSWORD

USERS = "/v1/vendor/users"
SECRET_MARKERS = ("password_hash", "token_hash", "$argon2", "token_version")


@pytest.fixture
def team(accounts, db):
    """One vendor with an owner, an admin and a member, and a second vendor next door."""
    owner = accounts.vendor("Team Co")
    admin = accounts.user(owner.vendor, role=Role.ADMIN)
    member = accounts.user(owner.vendor, role=Role.MEMBER)
    neighbour = accounts.vendor("Next Door Co")
    db.commit()
    return {"owner": owner, "admin": admin, "member": member, "neighbour": neighbour}


def user_url(account) -> str:
    return f"{USERS}/{account.user.id}"


def patch(testapp, actor, target, body: dict, status: int):
    return testapp.patch_json(user_url(target), body, headers=actor.headers, status=status)


def assert_no_secrets(response) -> None:
    for marker in SECRET_MARKERS:
        assert marker not in response.text


def test_member_reads_the_vendor_and_its_users_only(testapp, team):
    member = team["member"]
    vendor = testapp.get("/v1/vendor", headers=member.headers, status=200).json["vendor"]
    assert vendor["id"] == str(member.vendor_id)
    listed = testapp.get(USERS, headers=member.headers, status=200)
    emails = {u["email"] for u in listed.json["items"]}
    assert emails == {team[k].user.email for k in ("owner", "admin", "member")}
    assert_no_secrets(listed)


def test_member_cannot_invite_change_or_remove(testapp, team):
    member, admin = team["member"], team["admin"]
    testapp.post_json(USERS, {"email": "new@example.com"}, headers=member.headers, status=403)
    patch(testapp, member, admin, {"name": "renamed"}, 403)
    testapp.delete(user_url(admin), headers=member.headers, status=403)
    testapp.patch_json("/v1/vendor", {"name": "Hijacked"}, headers=member.headers, status=403)


def test_users_list_cannot_be_widened_by_query_parameters(testapp, team):
    neighbour = team["neighbour"]
    testapp.get(USERS, {"vendor_id": str(neighbour.vendor_id)}, headers=team["member"].headers, status=422)


def test_platform_admin_has_no_vendor_routes(testapp, accounts, db, team):
    platform = accounts.platform_admin()
    db.commit()
    testapp.get("/v1/vendor", headers=platform.headers, status=403)
    testapp.get(USERS, headers=platform.headers, status=403)
    testapp.post_json(USERS, {"email": "x@example.com"}, headers=platform.headers, status=403)
    patch(testapp, platform, team["member"], {"name": "x"}, 403)
    testapp.delete(user_url(team["member"]), headers=platform.headers, status=403)


def test_another_vendors_user_is_not_found(testapp, team):
    neighbour = team["neighbour"]
    patch(testapp, team["owner"], neighbour, {"name": "renamed"}, 404)
    testapp.delete(user_url(neighbour), headers=team["owner"].headers, status=404)


def test_admin_invites_and_the_invitee_sets_a_password_and_signs_in(testapp, team, run_outbox, mailbox):
    testapp.post_json(USERS, {"email": "Newbie@Example.com", "name": "Newbie", "role": "member"},
                      headers=team["admin"].headers, status=202)
    listed = testapp.get(USERS, headers=team["admin"].headers, status=200)
    assert_no_secrets(listed)
    [user] = [u for u in listed.json["items"] if u["email"] == "newbie@example.com"]
    assert (user["role"], user["vendor_id"]) == ("member", str(team["admin"].vendor_id))
    # Before choosing a password the invitee cannot sign in.
    testapp.post_json("/v1/auth/login", {"email": "newbie@example.com", "password": TEST_PASSWORD}, status=401)

    run_outbox()
    [message] = mailbox.to("newbie@example.com")
    assert "Team Co" in message["Subject"]
    token = re.search(r"token=([A-Za-z0-9_-]{20,})", message.get_content()).group(1)
    testapp.post_json("/v1/auth/password/reset", {"token": token, "password": "newbie's own passphrase"},
                      status=200)
    tokens = testapp.post_json("/v1/auth/login", {"email": "newbie@example.com",
                                                  "password": "newbie's own passphrase"}, status=200).json
    me = testapp.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json
    assert (me["user"]["role"], me["user"]["email_verified"]) == ("member", True)
    assert me["vendor"]["id"] == str(team["admin"].vendor_id)


def test_inviting_an_address_with_an_account_elsewhere_answers_as_for_a_new_one_and_tells_its_owner(
        testapp, team, run_outbox, mailbox):
    neighbour = team["neighbour"].user.email
    fresh = testapp.post_json(USERS, {"email": "fresh@example.com"}, headers=team["admin"].headers, status=202)
    taken = testapp.post_json(USERS, {"email": neighbour}, headers=team["admin"].headers, status=202)
    assert taken.json == fresh.json
    run_outbox()
    [message] = mailbox.to(neighbour)
    assert "already has a Kloyst account" in message.get_content()
    assert "token=" not in message.get_content()


def test_admin_cannot_make_an_owner(testapp, team):
    admin = team["admin"]
    refused = testapp.post_json(USERS, {"email": "boss@example.com", "role": "owner"}, headers=admin.headers,
                                status=403).json
    assert refused["error"]["code"] == "owner_required"
    assert patch(testapp, admin, team["member"], {"role": "owner"}, 403).json["error"]["code"] == "owner_required"
    patch(testapp, admin, admin, {"role": "owner"}, 403)


def test_admin_cannot_change_or_remove_an_owner(testapp, team):
    admin, owner = team["admin"], team["owner"]
    patch(testapp, admin, owner, {"role": "member"}, 403)
    patch(testapp, admin, owner, {"disabled": True}, 403)
    testapp.delete(user_url(owner), headers=admin.headers, status=403)


def test_owner_can_invite_an_owner(testapp, team):
    testapp.post_json(USERS, {"email": "co-owner@example.com", "role": "owner"}, headers=team["owner"].headers,
                      status=202)
    listed = testapp.get(USERS, headers=team["owner"].headers, status=200).json["items"]
    assert [u["role"] for u in listed if u["email"] == "co-owner@example.com"] == ["owner"]


def test_the_last_owner_cannot_be_demoted_or_disabled(testapp, team):
    owner = team["owner"]  # the neighbour vendor's owner must not count for this vendor
    assert patch(testapp, owner, owner, {"role": "admin"}, 409).json["error"]["code"] == "last_owner"
    patch(testapp, owner, owner, {"disabled": True}, 409)
    me = testapp.get("/v1/auth/me", headers=owner.headers, status=200).json
    assert me["user"]["role"] == "owner"


def test_the_last_owner_cannot_be_removed(testapp, team):
    owner = team["owner"]
    testapp.delete(user_url(owner), headers=owner.headers, status=409)


def test_with_two_owners_one_may_step_down_but_not_the_second(testapp, accounts, db, team):
    owner = team["owner"]
    second = accounts.user(owner.vendor, role=Role.OWNER)
    db.commit()
    patch(testapp, second, second, {"role": "admin"}, 200)
    patch(testapp, owner, owner, {"role": "admin"}, 409)


def test_a_disabled_owner_does_not_count_as_an_owner(testapp, accounts, db, team):
    owner = team["owner"]
    dormant = accounts.user(owner.vendor, role=Role.OWNER)
    dormant.user.disabled_at = utcnow()
    db.commit()
    patch(testapp, owner, owner, {"role": "admin"}, 409)
    # ...and demoting the disabled one leaves the vendor with its active owner: allowed.
    assert patch(testapp, owner, dormant, {"role": "member"}, 200).json["user"]["role"] == "member"


def test_an_owner_may_remove_another_owner(testapp, accounts, db, team):
    owner = team["owner"]
    second = accounts.user(owner.vendor, role=Role.OWNER)
    db.commit()
    testapp.delete(user_url(second), headers=owner.headers, status=204)
    testapp.get("/v1/auth/me", headers=second.headers, status=401)


def test_nobody_disables_or_removes_themselves(testapp, team):
    admin = team["admin"]
    assert patch(testapp, admin, admin, {"disabled": True}, 409).json["error"]["code"] == "self_disable"
    assert testapp.delete(user_url(admin), headers=admin.headers, status=409).json["error"]["code"] == \
        "self_delete"


def test_admin_removes_a_member_whose_tokens_then_stop_working(testapp, team, db):
    member = team["member"]
    member_id = member.user.id
    testapp.get("/v1/auth/me", headers=member.headers, status=200)
    removed = testapp.delete(user_url(member), headers=team["admin"].headers, status=204)
    assert removed.body == b"" and "Content-Type" not in removed.headers
    testapp.get("/v1/auth/me", headers=member.headers, status=401)
    db.expire_all()
    with tenancy.unscoped(db):
        assert db.get(User, member_id) is None


def login(testapp, account) -> dict:
    return testapp.post_json("/v1/auth/login", {"email": account.user.email, "password": TEST_PASSWORD},
                             status=200).json


def test_a_role_change_ends_the_users_sessions(testapp, team):
    member = team["member"]
    session = login(testapp, member)
    changed = patch(testapp, team["owner"], member, {"role": "admin"}, 200)
    assert changed.json["user"]["role"] == "admin"
    assert_no_secrets(changed)

    testapp.get("/v1/auth/me", headers={"Authorization": f"Bearer {session['access_token']}"}, status=401)
    testapp.post_json("/v1/auth/refresh", {"refresh_token": session["refresh_token"]}, status=401)
    fresh = login(testapp, member)
    me = testapp.get("/v1/auth/me", headers={"Authorization": f"Bearer {fresh['access_token']}"}).json
    assert me["user"]["role"] == "admin"


def test_disabling_a_user_ends_their_sessions_and_sign_in(testapp, team):
    member = team["member"]
    session = login(testapp, member)
    assert patch(testapp, team["admin"], member, {"disabled": True}, 200).json["user"]["disabled"] is True
    testapp.post_json("/v1/auth/refresh", {"refresh_token": session["refresh_token"]}, status=401)
    testapp.post_json("/v1/auth/login", {"email": member.user.email, "password": TEST_PASSWORD}, status=401)
    patch(testapp, team["admin"], member, {"disabled": False}, 200)
    login(testapp, member)


def test_renaming_leaves_sessions_alone(testapp, team):
    member = team["member"]
    assert patch(testapp, team["admin"], member, {"name": "Renamed"}, 200).json["user"]["name"] == "Renamed"
    testapp.get("/v1/auth/me", headers=member.headers, status=200)


@pytest.mark.parametrize("field, value", [
    ("vendor_id", "00000000-0000-0000-0000-000000000000"),
    ("is_platform_admin", True),
    ("email", "taken-over@example.com"),
    ("password_hash", "$argon2id$v=19$m=65536,t=3,p=4$x$y"),
    ("token_version", 0),
    ("email_verified_at", "2020-01-01T00:00:00Z"),
    ("id", "00000000-0000-0000-0000-000000000000"),
])
def test_patch_refuses_fields_it_does_not_allow(testapp, team, db, field, value):
    member = team["member"]
    refused = patch(testapp, team["owner"], member, {"name": "ok", field: value}, 422).json
    assert field in refused["error"]["message"]
    db.expire_all()
    with tenancy.unscoped(db):
        stored = db.get(User, member.user.id)
        assert (stored.name, stored.vendor_id, stored.is_platform_admin) == ("member user", member.vendor_id, False)


@pytest.mark.parametrize("role", ["superadmin", "platform_admin", "", "OWNER"])
def test_patch_refuses_roles_that_do_not_exist(testapp, team, role):
    patch(testapp, team["owner"], team["member"], {"role": role}, 422)


@pytest.mark.parametrize("body", [{"status": "active"}, {"id": "00000000-0000-0000-0000-000000000000"},
                                  {"name": "ok", "status": "suspended"}])
def test_vendor_patch_refuses_fields_it_does_not_allow(testapp, team, body):
    testapp.patch_json("/v1/vendor", body, headers=team["owner"].headers, status=422)


def test_admin_renames_the_vendor(testapp, team):
    renamed = testapp.patch_json("/v1/vendor", {"name": "Team Co Ltd"}, headers=team["admin"].headers,
                                 status=200).json
    assert renamed["vendor"]["name"] == "Team Co Ltd"
    assert testapp.get("/v1/vendor", headers=team["member"].headers).json["vendor"]["name"] == "Team Co Ltd"


def test_invite_refuses_fields_it_does_not_allow(testapp, team):
    testapp.post_json(USERS, {"email": "x@example.com", "vendor_id": str(team["neighbour"].vendor_id)},
                      headers=team["owner"].headers, status=422)
    testapp.post_json(USERS, {"email": "y@example.com", "password_hash": "x"}, headers=team["owner"].headers,
                      status=422)


def test_two_owners_demoting_each_other_at_once_leave_one_owner(committed_db, registry, wsgi_app, monkeypatch):
    factory = testing.AccountFactory(committed_db, registry["kloyst.access_tokens"])
    first = factory.vendor("Race Co")
    second = factory.user(first.vendor, role=Role.OWNER)
    committed_db.commit()

    # Hold each request between reading the owners and committing; without the row locks both
    # would read "two owners" and both demotions would go through.
    real = account_views._active_owner_ids

    def slow_owner_ids(request):
        owners = real(request)
        time.sleep(0.3)
        return owners

    monkeypatch.setattr(account_views, "_active_owner_ids", slow_owner_ids)
    start = threading.Barrier(2)
    statuses: list[int] = []

    def demote(actor, target) -> None:
        app = webtest.TestApp(wsgi_app, extra_environ={"REMOTE_ADDR": "203.0.113.7"})
        start.wait()
        statuses.append(app.patch_json(user_url(target), {"role": "admin"}, headers=actor.headers,
                                       status="*").status_int)

    threads = [threading.Thread(target=demote, args=pair) for pair in ((first, second), (second, first))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 409]
    with tenancy.unscoped(committed_db):
        committed_db.expire_all()
        owners = committed_db.scalar(select(func.count()).select_from(User)
                                     .where(User.vendor_id == first.vendor_id, User.role == Role.OWNER))
    assert owners == 1
