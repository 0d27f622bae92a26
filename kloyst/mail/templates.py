"""The mail Kloyst sends about accounts, rendered when the outbox delivers it, from ids.

Why at delivery: an outbox row lives until it is delivered (through retries, and as a dead
letter after them), so a row holding a mail's text would hold its link's one-time token and the
person's address in clear. The row holds the template's name and ids only:

- ``user_id`` / ``inviter_id``: rows read again at delivery (a user deleted meanwhile gets nothing);
- ``address``: for the flows that must not look the address up while the client waits
  (forgot-password, resend-verification: the answer and the work are then the same whether or not
  it has an account), the address sealed with :class:`kloyst.crypto.FieldCipher`; the delivery
  looks it up and mails only an account that exists;
- ``nonce``: 16 random bytes. The one-time token of the link is minted at delivery as
  HMAC-SHA256(``kloyst.crypto.hash_key``, nonce), so a retry of the same event mails the same
  link, and nothing stored (neither the row nor ``one_time_token``, which keeps the SHA-256 only)
  lets anyone holding the database alone rebuild it. The token's row is written after the mail is
  handed over, in the delivery's transaction; changing the hash key invalidates links not yet used.

Names come from user input; every header value is stripped of control characters here too, so an
old row with a CR/LF in a name can never make a mail undeliverable.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import unicodedata
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from kloyst.accounts.models import User, Vendor, normalize_email
from kloyst.auth.models import (INVITATION_TTL, RESET_PASSWORD_TTL, VERIFY_EMAIL_TTL, OneTimePurpose,
                                OneTimeToken)
from kloyst.auth.tokens import secret_hash
from kloyst.db import session_scope, tenancy, utcnow

VERIFY_EMAIL = "verify_email"
SIGNUP_TAKEN = "signup_taken"
RESET_PASSWORD = "reset_password"
INVITATION = "invitation"
INVITATION_TAKEN = "invitation_taken"
TEMPLATES = (VERIFY_EMAIL, SIGNUP_TAKEN, RESET_PASSWORD, INVITATION, INVITATION_TAKEN)

# The pages mailed links open: Kloyst's own (kloyst.auth.pages), or the vendor portal's at the same paths.
VERIFY_PATH = "/verify-email"
RESET_PATH = "/reset-password"

# The associated data of a sealed address: no vendor (the address is looked up platform-wide) and this field.
_ADDRESS_VENDOR = uuid.UUID(int=0)
_ADDRESS_FIELD = "mail.address"


@dataclass(frozen=True)
class Rendered:
    """A mail ready to hand over, and the one-time token to record once it has been."""

    to: str
    subject: str
    body: str
    token: OneTimeToken | None = None


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii")


def seal_address(cipher, email: str) -> str:
    sealed = cipher.encrypt(normalize_email(email), vendor_id=_ADDRESS_VENDOR, field=_ADDRESS_FIELD)
    return base64.b64encode(sealed).decode("ascii")


def open_address(cipher, sealed: str) -> str:
    return cipher.decrypt(base64.b64decode(sealed), vendor_id=_ADDRESS_VENDOR, field=_ADDRESS_FIELD)


def mint_secret(settings, nonce: str) -> str:
    """The one-time token an event's mail carries: the same for every retry of the event, stored nowhere."""
    key = settings["kloyst.crypto.hash_key"]
    key = key.encode() if isinstance(key, str) else key
    digest = hmac.new(key, b"kloyst one-time token\0" + nonce.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def header_text(value: str) -> str:
    """``value`` without control characters (C0, C1, line and paragraph separators): safe in a mail header."""
    return "".join(" " if unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} else ch for ch in value).strip()


def _link(settings, path: str, secret: str) -> str:
    """A mailed link: to the vendor portal's page when there is a portal, else to Kloyst's own (kloyst.auth.pages)."""
    base = settings["kloyst.mail.portal_url"] or settings["kloyst.http.public_url"]
    return f"{base.rstrip('/')}{path}?token={secret}"


def _token(user: User, purpose: OneTimePurpose, ttl: dt.timedelta, secret: str) -> OneTimeToken:
    return OneTimeToken(user_id=user.id, purpose=purpose, token_hash=secret_hash(secret), expires_at=utcnow() + ttl)


def _user(db, payload: dict) -> User | None:
    if payload.get("user_id"):
        return db.get(User, uuid.UUID(payload["user_id"]))
    return None


def _user_by_address(db, cipher, payload: dict) -> User | None:
    email = open_address(cipher, payload["address"])
    return db.scalars(select(User).where(User.email == email)).one_or_none()


def _verify_email(settings, user: User, secret: str) -> Rendered:
    body = (f"Hello {header_text(user.name) or user.email},\n\nConfirm your email address to start using Kloyst:\n"
            f"{_link(settings, VERIFY_PATH, secret)}\n\nOr send this token to "
            f"POST {settings['kloyst.api.prefix']}/auth/verify-email:\n{secret}\n\n"
            f"The link expires in {VERIFY_EMAIL_TTL.days} days.\n")
    return Rendered(user.email, "Confirm your email for Kloyst", body,
                    _token(user, OneTimePurpose.VERIFY_EMAIL, VERIFY_EMAIL_TTL, secret))


def _signup_taken(settings, user: User) -> Rendered:
    body = (f"Someone tried to create a Kloyst account with {user.email}, which already has one.\n\n"
            "If it was you, sign in, or choose a new password with "
            f"POST {settings['kloyst.api.prefix']}/auth/password/forgot.\n"
            "If it was not you, nothing has changed and you need not do anything.\n")
    return Rendered(user.email, "Someone tried to sign up to Kloyst with your address", body)


def _reset_password(settings, user: User, secret: str) -> Rendered:
    body = (f"Someone asked to reset the password of {user.email}.\n\nChoose a new password here:\n"
            f"{_link(settings, RESET_PATH, secret)}\n\nOr send this token with your new password to "
            f"POST {settings['kloyst.api.prefix']}/auth/password/reset:\n{secret}\n\n"
            "The link expires in one hour. If it was not you, ignore this message.\n")
    return Rendered(user.email, "Reset your Kloyst password", body,
                    _token(user, OneTimePurpose.RESET_PASSWORD, RESET_PASSWORD_TTL, secret))


def _link_secret(secret: str | None, template: str) -> str:
    """The link's secret of a mail that carries one: sent with ``with_token=True``, so its event has a nonce."""
    if secret is None:
        raise ValueError(f"a {template!r} mail needs a token, and its outbox event has no nonce")
    return secret


def _inviter(db, payload: dict) -> tuple[str, str]:
    inviter = db.get(User, uuid.UUID(payload["inviter_id"])) if payload.get("inviter_id") else None
    vendor = db.get(Vendor, inviter.vendor_id) if inviter is not None and inviter.vendor_id else None
    who = header_text(inviter.name or inviter.email) if inviter is not None else "Someone"
    return who or "Someone", header_text(vendor.name) if vendor is not None else "a vendor"


def _invitation(settings, user: User, who: str, vendor_name: str, secret: str) -> Rendered:
    body = (f"You have been invited to {vendor_name} on Kloyst as {user.role.value}.\n\n"
            f"Choose your password here:\n{_link(settings, RESET_PATH, secret)}\n\nOr send this "
            f"token with your password to POST {settings['kloyst.api.prefix']}/auth/password/reset:\n"
            f"{secret}\n\nThe invitation expires in {INVITATION_TTL.days} days.\n")
    return Rendered(user.email, f"{who} invited you to {vendor_name} on Kloyst", body,
                    _token(user, OneTimePurpose.RESET_PASSWORD, INVITATION_TTL, secret))


def _invitation_taken(user: User, who: str, vendor_name: str) -> Rendered:
    body = (f"{who} invited {user.email} to {vendor_name} on Kloyst, but this address already has a Kloyst "
            "account, and an address belongs to one account only.\n\n"
            f"To join {vendor_name}, ask them to invite another of your addresses. "
            "If you do not know them, you need not do anything.\n")
    return Rendered(user.email, f"{who} invited you to {vendor_name} on Kloyst", body)


def render(ctx, payload: dict) -> Rendered | None:
    """The mail an event asks for, or None when there is nobody to tell (unknown address, user gone or disabled).

    Reads in a read-only session, so on SQLite no write lock is held while the mail is handed over.
    """
    template = payload["template"]
    settings = ctx.settings
    secret = mint_secret(settings, payload["nonce"]) if payload.get("nonce") else None
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS,
                       read_only=True) as db:
        if template in {RESET_PASSWORD, VERIFY_EMAIL} and payload.get("address"):
            user = _user_by_address(db, ctx.registry["kloyst.cipher"], payload)
        else:
            user = _user(db, payload)
        if user is None or user.disabled_at is not None:
            return None
        if template == VERIFY_EMAIL:
            if user.email_verified_at is not None:
                return None
            return _verify_email(settings, user, _link_secret(secret, template))
        if template == SIGNUP_TAKEN:
            return _signup_taken(settings, user)
        if template == RESET_PASSWORD:
            return _reset_password(settings, user, _link_secret(secret, template))
        if template == INVITATION:
            return _invitation(settings, user, *_inviter(db, payload), _link_secret(secret, template))
        if template == INVITATION_TAKEN:
            return _invitation_taken(user, *_inviter(db, payload))
    raise ValueError(f"unknown mail template {template!r}")
