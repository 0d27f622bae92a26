"""AccessTokenCodec on its own: claims round-trip, key rotation by kid, leeway, and the kinds it refuses."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import jwt
import pytest

from kloyst.auth.tokens import ACCESS_TYP, AccessTokenCodec, InvalidToken, new_secret, secret_hash

NEW_KEY = b"n" * 32
OLD_KEY = b"o" * 32


def codec(keys: dict[str, bytes], *, ttl: int = 600, leeway: int = 30) -> AccessTokenCodec:
    return AccessTokenCodec(keys, issuer="kloyst", audience="kloyst-api", ttl_seconds=ttl, leeway_seconds=leeway)


def issue(c: AccessTokenCodec, *, now: dt.datetime | None = None, vendor_id: uuid.UUID | None = None) -> str:
    token, _ = c.issue(user_id=uuid.uuid4(), vendor_id=vendor_id, role="admin", token_version=3, now=now)
    return token


def test_issued_token_round_trips_its_claims():
    c = codec({"k1": NEW_KEY})
    user_id, vendor_id = uuid.uuid4(), uuid.uuid4()
    token, expires = c.issue(user_id=user_id, vendor_id=vendor_id, role="admin", token_version=7)
    claims = c.decode(token)
    assert (claims.user_id, claims.vendor_id, claims.role, claims.token_version) == (user_id, vendor_id, "admin", 7)
    assert claims.expires_at == expires.replace(microsecond=0)
    assert jwt.get_unverified_header(token)["typ"] == ACCESS_TYP


def test_platform_admin_token_has_no_vendor():
    c = codec({"k1": NEW_KEY})
    assert c.decode(issue(c)).vendor_id is None


def test_every_token_gets_a_fresh_jti():
    c = codec({"k1": NEW_KEY})
    assert c.decode(issue(c)).jti != c.decode(issue(c)).jti


def test_rotation_new_tokens_carry_the_new_kid_and_old_tokens_still_verify():
    before = codec({"old": OLD_KEY})
    old_token = issue(before)
    after = codec({"new": NEW_KEY, "old": OLD_KEY})

    new_token = issue(after)
    assert jwt.get_unverified_header(new_token)["kid"] == "new"
    assert after.decode(old_token).token_version == 3
    assert after.decode(new_token).token_version == 3


def test_rotation_dropping_the_old_key_retires_its_tokens():
    old_token = issue(codec({"old": OLD_KEY}))
    with pytest.raises(InvalidToken):
        codec({"new": NEW_KEY}).decode(old_token)


def test_a_kid_is_only_ever_checked_against_its_own_key():
    # Signed with the old key but labelled "new": the kid picks the key, no other key is tried.
    mislabelled = issue(codec({"new": OLD_KEY}))
    with pytest.raises(InvalidToken):
        codec({"new": NEW_KEY, "old": OLD_KEY}).decode(mislabelled)


def test_expiry_is_honoured_with_the_configured_leeway():
    c = codec({"k1": NEW_KEY}, ttl=60, leeway=30)
    now = dt.datetime.now(dt.timezone.utc)
    within = issue(c, now=now - dt.timedelta(seconds=60 + 10))
    beyond = issue(c, now=now - dt.timedelta(seconds=60 + 31))
    c.decode(within)
    with pytest.raises(InvalidToken):
        c.decode(beyond)


def test_a_token_from_the_future_is_refused():
    c = codec({"k1": NEW_KEY}, leeway=30)
    with pytest.raises(InvalidToken):
        c.decode(issue(c, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "e30.e30.", "....", "Bearer x.y.z"])
def test_garbage_is_an_invalid_token_not_a_crash(garbage):
    with pytest.raises(InvalidToken):
        codec({"k1": NEW_KEY}).decode(garbage)


@pytest.mark.parametrize("kid", [["k1"], 1, {"k": 1}, None])
def test_a_non_string_kid_is_refused(kid):
    c = codec({"k1": NEW_KEY})
    header = {"alg": "HS256", "typ": ACCESS_TYP, "kid": kid}
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        c.decode(".".join([encoded, *issue(c).split(".")[1:]]))


def test_a_codec_needs_a_key_and_refuses_short_ones():
    with pytest.raises(ValueError):
        codec({})
    with pytest.raises(ValueError):
        codec({"short": b"too short"})


def test_secrets_are_256_bit_and_stored_only_as_their_sha256():
    secret = new_secret()
    assert len(secret) >= 43
    assert secret_hash(secret) != secret.encode()
    assert len(secret_hash(secret)) == 32
    assert new_secret() != secret
