"""Sign-up, verification, sign-in, token refresh, sign-out and password reset.

Each function takes the request's session and does its whole job inside the request's
transaction: a failure anywhere leaves nothing half done (no user without a vendor, no
mail for a rolled-back sign-up, since mail goes through the outbox).

No answer tells whether an address has an account (OWASP, account enumeration), and neither
does the work behind it, since a stopwatch is an oracle too:

- sign-up and invitation hash one password and queue one mail whether or not the address is
  taken; for a taken one the mail tells its owner what was tried (:mod:`kloyst.mail.templates`);
- forgot-password and resend-verification do not even look the address up: they queue one
  mail carrying the address sealed, and the delivery decides whether anyone gets a mail.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from kloyst import events, mail
from kloyst.accounts.models import Role, User, Vendor, VendorStatus, normalize_email
from kloyst.auth.models import OneTimePurpose, OneTimeToken, RefreshToken
from kloyst.auth.passwords import hash_password, needs_rehash, password_problem, verify_password
from kloyst.auth.tokens import AccessTokenCodec, new_secret, secret_hash
from kloyst.db import tenancy, utcnow
from kloyst.errors import Conflict, Forbidden, Unauthorized, Unprocessable
from kloyst.mail import templates
from kloyst.outbox import Outbox


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_at: dt.datetime
    refresh_token: str
    refresh_expires_at: dt.datetime

    def as_json(self, now: dt.datetime) -> dict:
        return {
            "token_type": "Bearer",
            "access_token": self.access_token,
            "expires_in": int((self.access_expires_at - now).total_seconds()),
            "refresh_token": self.refresh_token,
            "refresh_expires_in": int((self.refresh_expires_at - now).total_seconds()),
        }


def _require_password(password: str) -> None:
    if problem := password_problem(password):
        raise Unprocessable(problem, details={"fields": [{"field": "password", "problem": problem}]})


def find_user_by_email(db: Session, email: str) -> User | None:
    with tenancy.unscoped(db):
        return db.scalars(select(User).where(User.email == normalize_email(email))).one_or_none()


def issue_one_time_token(db: Session, user: User, purpose: OneTimePurpose, ttl: dt.timedelta) -> str:
    """A one-time token recorded now (tools and tests; mailed links mint theirs at delivery)."""
    secret = new_secret()
    db.add(OneTimeToken(user_id=user.id, purpose=purpose, token_hash=secret_hash(secret),
                        expires_at=utcnow() + ttl))
    return secret


def _locked(query):
    """``FOR UPDATE`` that also refreshes an already-loaded row, so the checks see the committed state."""
    return query.with_for_update().execution_options(populate_existing=True)


def _claim_use(db: Session, model, row_id) -> bool:
    """Mark a single-use row used, atomically: only one of two racing requests sees True.

    A conditional UPDATE rather than trusting the earlier read, because ``FOR UPDATE`` is a
    no-op on SQLite (the embedded default): the database decides who was first.
    """
    revoked = getattr(model, "revoked_at", None)
    query = update(model).where(model.id == row_id, model.used_at.is_(None))
    if revoked is not None:
        query = query.where(revoked.is_(None))
    result = db.execute(query.values(used_at=utcnow()), execution_options={"synchronize_session": False})
    return cast("CursorResult[Any]", result).rowcount == 1  # an UPDATE's result is a CursorResult


def one_time_token_usable(db: Session, secret: str, purpose: OneTimePurpose) -> bool:
    """Whether ``secret`` would be accepted now, without using it (the page a mailed link opens asks first)."""
    row = db.scalars(select(OneTimeToken).where(OneTimeToken.token_hash == secret_hash(secret),
                                                OneTimeToken.purpose == purpose)).one_or_none()
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return False
    with tenancy.unscoped(db):
        user = db.get(User, row.user_id)
    return user is not None and user.disabled_at is None


def consume_one_time_token(db: Session, secret: str, purpose: OneTimePurpose) -> User:
    """Mark the token used and return its user; a wrong, used or expired token is the same 422."""
    query = select(OneTimeToken).where(OneTimeToken.token_hash == secret_hash(secret),
                                       OneTimeToken.purpose == purpose)
    row = db.scalars(_locked(query)).one_or_none()
    if row is None or row.used_at is not None or row.expires_at <= utcnow() or not _claim_use(
            db, OneTimeToken, row.id):
        raise Unprocessable("this link is invalid or has expired; request a new one", code="invalid_token",
                            field="token")
    db.refresh(row)
    with tenancy.unscoped(db):
        user = db.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        raise Unprocessable("this link is invalid or has expired; request a new one", code="invalid_token",
                            field="token")
    return user


def send_verification(db: Session, cipher, email: str) -> None:
    """Queue a new verification link for ``email``; the delivery mails it only to an unconfirmed, enabled account."""
    mail.send(Outbox(db), templates.VERIFY_EMAIL, address=templates.seal_address(cipher, email), with_token=True)


def signup(db: Session, settings, *, vendor_name: str, name: str, email: str, password: str) -> User | None:
    """Create the vendor and its owner, or, when the address is taken, tell its owner; None then.

    Both branches hash the password and queue one mail, so neither the answer nor its time
    says which happened.
    """
    _require_password(password)
    email = normalize_email(email)
    password_hash = hash_password(password)
    taken = find_user_by_email(db, email)
    if taken is not None:
        mail.send(Outbox(db), templates.SIGNUP_TAKEN, vendor_id=taken.vendor_id, user_id=taken.id)
        return None
    with tenancy.unscoped(db):
        vendor = Vendor(name=vendor_name, status=VendorStatus.ACTIVE)
        db.add(vendor)
        db.flush()
        user = User(vendor_id=vendor.id, email=email, name=name, password_hash=password_hash, role=Role.OWNER)
        db.add(user)
        db.flush()
    mail.send(Outbox(db), templates.VERIFY_EMAIL, vendor_id=vendor.id, user_id=user.id, with_token=True)
    events.record(Outbox(db), vendor.id, "VendorSignedUp", user_id=str(user.id))
    return user


def verify_email(db: Session, secret: str) -> User:
    user = consume_one_time_token(db, secret, OneTimePurpose.VERIFY_EMAIL)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    return user


def authenticate(db: Session, email: str, password: str) -> User:
    """The user for these credentials; one message for unknown email and wrong password (no enumeration)."""
    user = find_user_by_email(db, email)
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled_at is not None:
        raise Unauthorized("invalid email or password", code="invalid_credentials")
    if user.vendor is not None and user.vendor.status != VendorStatus.ACTIVE:
        raise Forbidden("this vendor account is suspended; contact support", code="vendor_suspended")
    if user.email_verified_at is None:
        raise Forbidden("confirm your email address first; we sent you a link", code="email_not_verified")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    return user


def _new_refresh(db: Session, user: User, settings, family_id: uuid.UUID, parent_id: uuid.UUID | None
                 ) -> tuple[str, dt.datetime]:
    secret = new_secret()
    expires = utcnow() + dt.timedelta(seconds=settings["kloyst.jwt.refresh_ttl_seconds"])
    db.add(RefreshToken(family_id=family_id, parent_id=parent_id, user_id=user.id, token_hash=secret_hash(secret),
                        expires_at=expires))
    return secret, expires


def issue_tokens(db: Session, settings, codec: AccessTokenCodec, user: User, *,
                 family_id: uuid.UUID | None = None, parent_id: uuid.UUID | None = None) -> TokenPair:
    family_id = family_id or uuid.uuid4()
    access, access_exp = codec.issue(user_id=user.id, vendor_id=user.vendor_id, role=user.role.value,
                                     token_version=user.token_version, session_id=family_id)
    refresh, refresh_exp = _new_refresh(db, user, settings, family_id, parent_id)
    return TokenPair(access, access_exp, refresh, refresh_exp)


def revoke_family(db: Session, family_id: uuid.UUID) -> None:
    db.execute(update(RefreshToken).where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
               .values(revoked_at=utcnow()))


def refresh(db: Session, settings, codec: AccessTokenCodec, secret: str) -> TokenPair | None:
    """Rotate a refresh token. Returns None when it must be refused.

    Reuse of a used or revoked token revokes its whole family; the caller must *commit*
    that revocation before answering 401, so the view renders the 401 without raising.
    Two refreshes racing with one token are one use and one reuse: the row lock lets the
    first through, the second then finds the token used and revokes the family (no grace
    period: the reuse detection of RFC 9700 §4.14.2), so the client must sign in again.
    """
    # The row lock serialises concurrent refreshes of one token: the second waits, then sees used_at.
    row = db.scalars(_locked(select(RefreshToken).where(RefreshToken.token_hash == secret_hash(secret)))
                     ).one_or_none()
    if row is None:
        return None
    now = utcnow()
    if row.used_at is not None or row.revoked_at is not None:
        revoke_family(db, row.family_id)
        return None
    if row.expires_at <= now:
        return None
    with tenancy.unscoped(db):
        user = db.get(User, row.user_id)
    if user is None or user.disabled_at is not None or (
            user.vendor is not None and user.vendor.status != VendorStatus.ACTIVE):
        revoke_family(db, row.family_id)
        return None
    if not _claim_use(db, RefreshToken, row.id):  # a concurrent refresh used it first: that is reuse
        revoke_family(db, row.family_id)
        return None
    return issue_tokens(db, settings, codec, user, family_id=row.family_id, parent_id=row.id)


def logout(db: Session, secret: str) -> None:
    row = db.scalars(select(RefreshToken).where(RefreshToken.token_hash == secret_hash(secret))).one_or_none()
    if row is not None:
        revoke_family(db, row.family_id)


def revoke_all_sessions(db: Session, user: User) -> None:
    """Sign the user out everywhere: refresh families revoked, access tokens invalid via token_version."""
    db.execute(update(RefreshToken).where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
               .values(revoked_at=utcnow()))
    user.token_version += 1


def request_password_reset(db: Session, cipher, email: str) -> None:
    """Queue a reset link for ``email``; the delivery mails it only to an enabled account (no enumeration)."""
    mail.send(Outbox(db), templates.RESET_PASSWORD, address=templates.seal_address(cipher, email), with_token=True)


def retire_one_time_tokens(db: Session, user: User, purpose: OneTimePurpose) -> None:
    """Mark every outstanding token of ``purpose`` used: after a reset, older mailed links are dead."""
    db.execute(update(OneTimeToken).where(OneTimeToken.user_id == user.id, OneTimeToken.purpose == purpose,
                                          OneTimeToken.used_at.is_(None)).values(used_at=utcnow()))


def reset_password(db: Session, secret: str, password: str) -> User:
    _require_password(password)
    user = consume_one_time_token(db, secret, OneTimePurpose.RESET_PASSWORD)
    retire_one_time_tokens(db, user, OneTimePurpose.RESET_PASSWORD)
    user.password_hash = hash_password(password)
    if user.email_verified_at is None:  # the link reached the mailbox, which proves the address
        user.email_verified_at = utcnow()
    revoke_all_sessions(db, user)
    return user


def change_password(db: Session, settings, codec: AccessTokenCodec, user: User, *, current: str,
                    new: str) -> TokenPair:
    """Replace the password after checking the current one; every session of the user ends.

    The caller gets a fresh token pair in a new session, so changing a password on one device
    signs out every other, including an attacker's, and not the person changing it.
    """
    if not verify_password(user.password_hash, current):
        raise Unprocessable("the current password is wrong", code="wrong_password", field="current_password")
    if problem := password_problem(new):
        raise Unprocessable(problem, details={"fields": [{"field": "new_password", "problem": problem}]})
    user.password_hash = hash_password(new)
    revoke_all_sessions(db, user)
    db.flush()
    return issue_tokens(db, settings, codec, user)


def invite_user(db: Session, *, inviter: User, email: str, name: str, role: Role) -> User | None:
    """Add a user to the inviter's vendor (they choose a password through the mailed link); None when taken.

    An address that already has an account, in this vendor or any other, gets a mail saying
    who tried to invite it, and the inviter the same answer as for a new one: a vendor admin
    cannot learn who has an account elsewhere. Both branches hash once and queue one mail.
    """
    vendor_id = inviter.vendor_id
    if vendor_id is None:  # the route needs vendor.admin, which a platform admin (no vendor) never has
        raise Forbidden("only a vendor's own users invite to it")
    email = normalize_email(email)
    password_hash = hash_password(new_secret())
    taken = find_user_by_email(db, email)
    if taken is not None:
        mail.send(Outbox(db), templates.INVITATION_TAKEN, vendor_id=vendor_id, user_id=taken.id,
                  inviter_id=inviter.id)
        return None
    user = User(vendor_id=vendor_id, email=email, name=name, role=role, password_hash=password_hash)
    db.add(user)
    db.flush()
    mail.send(Outbox(db), templates.INVITATION, vendor_id=vendor_id, user_id=user.id, inviter_id=inviter.id,
              with_token=True)
    events.record(Outbox(db), vendor_id, "UserInvited", user_id=str(user.id), role=role.value)
    return user


def create_platform_admin(db: Session, *, email: str, name: str, password: str) -> User:
    _require_password(password)
    email = normalize_email(email)
    with tenancy.unscoped(db):
        if find_user_by_email(db, email) is not None:
            raise Conflict(f"an account with email {email} already exists", code="email_taken")
        user = User(vendor_id=None, email=email, name=name, password_hash=hash_password(password),
                    role=Role.MEMBER, is_platform_admin=True, email_verified_at=utcnow())
        db.add(user)
        db.flush()
    return user
