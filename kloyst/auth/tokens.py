"""Access tokens (JWT, HS256 pinned, key rotation by ``kid``) and opaque random secrets.

Rules from RFC 8725 (JSON Web Token best current practices), all enforced here:

- the algorithm is fixed per key (HS256); the token's own ``alg`` is never trusted;
- the ``kid`` header picks a key from our keyring; an unknown kid is rejected, and keys are
  never fetched from ``jku``/``x5u``;
- ``exp iat nbf iss aud sub jti`` are required; the ``typ`` header must be ``at+jwt``, so
  no other kind of token is ever accepted as an access token;
- a token may live at most the configured access TTL (``exp - iat``, plus the leeway): one
  signed with a year ahead, by a leaked key or a bug, is refused rather than trusted for a year;
- ``sid`` names the session (the refresh-token family) the token was issued in; the security
  policy (:mod:`kloyst.auth.policy`) refuses it once that session has ended (sign-out, reuse of
  a refresh token), so an access token never outlives its session;
- the first key in ``kloyst.jwt.signing_keys`` signs; the others still verify, so a key can
  be rotated by putting the new one first and dropping the old one after one access-token TTL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ACCESS_TYP = "at+jwt"
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]
MIN_KEY_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


class InvalidToken(Exception):
    """The token is not acceptable; the message is for logs, never for the client."""


class ExpiredToken(InvalidToken):
    """A token we signed whose ``exp`` has passed (beyond the leeway).

    Raised only once the signature has been verified, so telling the client "expired" (refresh
    it) rather than "invalid" (sign in again) reveals nothing about a token we did not issue.
    """


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    vendor_id: uuid.UUID | None
    role: str
    token_version: int
    jti: str
    expires_at: dt.datetime
    # The refresh-token family the token belongs to; None in a token without ``sid``, which the policy refuses.
    session_id: uuid.UUID | None = None


class AccessTokenCodec:
    def __init__(self, keys: dict[str, bytes], *, issuer: str, audience: str, ttl_seconds: int,
                 leeway_seconds: int) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        if short := [kid for kid, key in keys.items() if len(key) < MIN_KEY_BYTES]:
            raise ValueError(f"signing keys {short} are shorter than {MIN_KEY_BYTES} bytes")
        self.keys = dict(keys)
        self.active_kid = next(iter(self.keys))
        self.issuer = issuer
        self.audience = audience
        self.ttl = dt.timedelta(seconds=ttl_seconds)
        self.leeway = leeway_seconds

    @classmethod
    def from_settings(cls, settings) -> AccessTokenCodec:
        return cls(settings["kloyst.jwt.signing_keys"], issuer=settings["kloyst.jwt.issuer"],
                   audience=settings["kloyst.jwt.audience"], ttl_seconds=settings["kloyst.jwt.access_ttl_seconds"],
                   leeway_seconds=settings["kloyst.jwt.leeway_seconds"])

    def issue(self, *, user_id: uuid.UUID, vendor_id: uuid.UUID | None, role: str, token_version: int,
              session_id: uuid.UUID | None = None, now: dt.datetime | None = None) -> tuple[str, dt.datetime]:
        now = now or dt.datetime.now(dt.timezone.utc)
        expires = now + self.ttl
        claims = {
            "iss": self.issuer, "aud": self.audience, "sub": str(user_id),
            "vid": str(vendor_id) if vendor_id else None, "role": role, "tv": token_version,
            "iat": now, "nbf": now, "exp": expires, "jti": secrets.token_urlsafe(16),
        }
        if session_id is not None:
            claims["sid"] = str(session_id)
        token = jwt.encode(claims, self.keys[self.active_kid], algorithm=ALGORITHM,
                           headers={"kid": self.active_kid, "typ": ACCESS_TYP})
        return token, expires

    def decode(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed header: {exc}") from exc
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self.keys:
            raise InvalidToken("unknown or missing kid")
        if header.get("typ") != ACCESS_TYP:
            raise InvalidToken("not an access token (typ)")
        try:
            claims = jwt.decode(
                token, self.keys[kid], algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": REQUIRED_CLAIMS, "strict_aud": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ExpiredToken(str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        lifetime = claims["exp"] - claims["iat"] if _numbers(claims["exp"], claims["iat"]) else None
        if lifetime is None or lifetime > self.ttl.total_seconds() + self.leeway:
            raise InvalidToken(f"lifetime {lifetime!r}s is longer than the access TTL")
        try:
            return AccessClaims(
                user_id=uuid.UUID(claims["sub"]),
                vendor_id=uuid.UUID(claims["vid"]) if claims.get("vid") else None,
                role=str(claims["role"]),
                token_version=int(claims["tv"]),
                jti=str(claims["jti"]),
                expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc),
                session_id=uuid.UUID(claims["sid"]) if claims.get("sid") is not None else None,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidToken(f"bad claims: {exc}") from exc


def _numbers(*values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def new_secret() -> str:
    """An opaque 256-bit token for refresh, verification and reset links."""
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()
