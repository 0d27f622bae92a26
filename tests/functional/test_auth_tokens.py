"""Bearer access tokens over HTTP: every way a token can be wrong is the same 401 (RFC 8725).

Each bad token is built from a good one with exactly one thing changed, and the good one is
shown to work first, so every 401 here is caused by that one change. The one distinction the
401 makes is expiry, and only for a token whose signature is ours: the client then refreshes
(``token_expired``) instead of sending its user to sign in again (``invalid_token``).
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kloyst.accounts.models import VendorStatus
from kloyst.auth.tokens import REQUIRED_CLAIMS
from kloyst.db import utcnow

ME = "/v1/auth/me"


@pytest.fixture
def signing(registry):
    """The active (kid, key) and the claim rules, read from the running app's settings."""
    settings = registry.settings
    kid, key = next(iter(settings["kloyst.jwt.signing_keys"].items()))
    return {"kid": kid, "key": key, "iss": settings["kloyst.jwt.issuer"], "aud": settings["kloyst.jwt.audience"],
            "leeway": settings["kloyst.jwt.leeway_seconds"]}


def claims_for(account, signing, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": signing["iss"], "aud": signing["aud"], "sub": str(account.user.id),
              "vid": str(account.vendor_id), "role": account.user.role.value, "tv": account.user.token_version,
              "sid": str(account.session_id), "iat": now, "nbf": now, "exp": now + 300, "jti": "jti-under-test"}
    claims.update(changes)
    return claims


def forge(claims: dict, signing, *, key=None, algorithm="HS256", **header) -> str:
    """Sign ``claims`` like Kloyst does; a header given as None is left out of the token."""
    headers = {"kid": signing["kid"], "typ": "at+jwt", **header}
    omitted = {name for name, value in headers.items() if value is None}
    headers = {name: value for name, value in headers.items() if value is not None}
    if "typ" in omitted:
        headers["typ"] = None  # PyJWT writes typ=JWT unless told None
    return jwt.encode(claims, signing["key"] if key is None else key, algorithm=algorithm, headers=headers)


def get_me(testapp, token: str, status: int):
    return testapp.get(ME, headers={"Authorization": f"Bearer {token}"}, status=status)


def assert_refused(testapp, token: str) -> None:
    response = get_me(testapp, token, 401)
    assert response.json["error"]["code"] == "invalid_token"
    assert "sign in again" in response.json["error"]["message"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="kloyst", error="invalid_token"'


def test_a_well_formed_forged_token_is_accepted_so_each_refusal_below_is_meaningful(testapp, owner, signing):
    assert get_me(testapp, forge(claims_for(owner, signing), signing), 200).json["user"]["id"] == str(owner.user.id)


def test_alg_none_token_is_refused(testapp, owner, signing):
    token = jwt.encode(claims_for(owner, signing), None, algorithm="none",
                       headers={"kid": signing["kid"], "typ": "at+jwt"})
    assert_refused(testapp, token)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_hs384_token_signed_with_the_right_key_is_refused(testapp, owner, signing):
    assert_refused(testapp, forge(claims_for(owner, signing), signing, algorithm="HS384"))


def test_rs256_token_is_refused_even_with_a_known_kid(testapp, owner, signing):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    assert_refused(testapp, forge(claims_for(owner, signing), signing, key=pem, algorithm="RS256"))


def test_token_signed_with_a_wrong_key_is_refused(testapp, owner, signing):
    assert_refused(testapp, forge(claims_for(owner, signing), signing, key=b"W" * 32))


def test_unknown_kid_is_refused(testapp, owner, signing):
    assert_refused(testapp, forge(claims_for(owner, signing), signing, kid="not-a-key-of-ours"))


def test_missing_kid_is_refused(testapp, owner, signing):
    assert_refused(testapp, forge(claims_for(owner, signing), signing, kid=None))


def test_wrong_audience_is_refused(testapp, owner, signing):
    assert_refused(testapp, forge(claims_for(owner, signing, aud="some-other-api"), signing))


def test_audience_list_containing_ours_is_refused(testapp, owner, signing):
    assert_refused(testapp, forge(claims_for(owner, signing, aud=[signing["aud"], "other"]), signing))


def test_wrong_issuer_is_refused(testapp, owner, signing):
    assert_refused(testapp, forge(claims_for(owner, signing, iss="https://evil.example"), signing))


def _expired(owner, signing) -> dict:
    now = int(time.time())
    return claims_for(owner, signing, iat=now - 900, nbf=now - 900, exp=now - signing["leeway"] - 5)


def test_token_expired_beyond_the_leeway_is_refused_telling_the_client_to_refresh_it(testapp, owner, signing):
    response = get_me(testapp, forge(_expired(owner, signing), signing), 401)
    error = response.json["error"]
    assert error["code"] == "token_expired"
    assert "POST /v1/auth/refresh" in error["message"] and "sign in again" in error["message"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "expired" in response.headers["WWW-Authenticate"]


def test_an_expired_token_on_a_route_that_loads_a_row_is_the_same_token_expired(testapp, owner, signing):
    url = f"/v1/vendor/users/{owner.user.id}"
    testapp.patch_json(url, {"name": "Olga"}, headers=owner.headers, status=200)
    expired = forge(_expired(owner, signing), signing)
    response = testapp.patch_json(url, {"name": "Olga"}, headers={"Authorization": f"Bearer {expired}"}, status=401)
    assert response.json["error"]["code"] == "token_expired"


def test_an_expired_token_not_signed_by_us_is_invalid_not_expired(testapp, owner, signing):
    assert_refused(testapp, forge(_expired(owner, signing), signing, key=b"k" * 32))


def test_token_expired_within_the_leeway_is_accepted(testapp, owner, signing):
    now = int(time.time())
    just_expired = claims_for(owner, signing, iat=now - 300, nbf=now - 300, exp=now - signing["leeway"] // 3)
    get_me(testapp, forge(just_expired, signing), 200)


def test_token_not_yet_valid_is_refused(testapp, owner, signing):
    later = int(time.time()) + signing["leeway"] + 120
    assert_refused(testapp, forge(claims_for(owner, signing, nbf=later), signing))


def test_token_issued_in_the_future_is_refused(testapp, owner, signing):
    later = int(time.time()) + signing["leeway"] + 120
    assert_refused(testapp, forge(claims_for(owner, signing, iat=later), signing))


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_token_missing_a_required_claim_is_refused(testapp, owner, signing, claim):
    claims = claims_for(owner, signing)
    del claims[claim]
    assert_refused(testapp, forge(claims, signing))


def test_required_claims_are_the_seven_of_rfc_8725_practice():
    assert sorted(REQUIRED_CLAIMS) == sorted(["exp", "iat", "nbf", "iss", "aud", "sub", "jti"])


def _reencode_payload(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_tampered_payload_is_refused(testapp, accounts, db, owner):
    member = accounts.user(owner.vendor)
    db.commit()
    get_me(testapp, member.token, 200)
    assert_refused(testapp, _reencode_payload(member.token, sub=str(owner.user.id), role="owner"))


@pytest.mark.parametrize("typ", [None, "JWT", "rt+jwt", "AT+JWT "])
def test_token_without_the_access_typ_is_refused(testapp, owner, signing, typ):
    assert_refused(testapp, forge(claims_for(owner, signing), signing, typ=typ))


def test_refresh_token_used_as_a_bearer_token_is_refused(testapp, owner):
    tokens = testapp.post_json("/v1/auth/login", {"email": owner.user.email, "password": "correct horse battery "
                                                  "staple"}, status=200).json
    get_me(testapp, tokens["access_token"], 200)
    assert_refused(testapp, tokens["refresh_token"])


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", ""])
def test_malformed_authorization_headers_are_refused(testapp, header):
    response = testapp.get(ME, headers={"Authorization": header}, status=401)
    assert response.json["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_from_before_a_token_version_bump_is_refused(testapp, owner, db):
    get_me(testapp, owner.token, 200)
    owner.user.token_version += 1
    db.commit()
    assert_refused(testapp, owner.token)


def test_token_of_a_disabled_user_is_refused_at_once(testapp, owner, db):
    get_me(testapp, owner.token, 200)
    owner.user.disabled_at = utcnow()
    db.commit()
    assert_refused(testapp, owner.token)


def test_token_of_a_suspended_vendor_is_refused_at_once(testapp, owner, db):
    get_me(testapp, owner.token, 200)
    owner.vendor.status = VendorStatus.SUSPENDED
    db.commit()
    assert_refused(testapp, owner.token)


def test_token_claiming_another_vendor_is_refused(testapp, accounts, db, owner, signing):
    other = accounts.vendor("Other Co")
    db.commit()
    assert_refused(testapp, forge(claims_for(owner, signing, vid=str(other.vendor_id)), signing))


def test_token_of_a_deleted_user_is_refused(testapp, owner, db):
    get_me(testapp, owner.token, 200)
    db.delete(owner.user)
    db.commit()
    assert_refused(testapp, owner.token)
