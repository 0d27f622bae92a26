"""Refresh tokens and one-time tokens (email verification, password reset), stored only as hashes."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import Enum, ForeignKey, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.db import Base, new_id, utcnow


class RefreshToken(Base):
    """One generation of a refresh-token family.

    The token itself is never stored: ``token_hash`` is its SHA-256 (the token has 256
    bits of entropy, so a fast hash is enough). Each use marks the row ``used_at`` and
    inserts its child in the same family; presenting a used or revoked token revokes the
    whole family (RFC 9700 §4.14.2), which forces the real owner to sign in again.
    """

    __tablename__ = "refresh_token"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("refresh_token.id", ondelete="SET NULL"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


# How long a mailed link works. Invitations use the reset purpose (the invitee chooses a password).
VERIFY_EMAIL_TTL = dt.timedelta(days=2)
RESET_PASSWORD_TTL = dt.timedelta(hours=1)
INVITATION_TTL = dt.timedelta(days=7)


class OneTimePurpose(str, enum.Enum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"


class OneTimeToken(Base):
    """A single-use token mailed to a user; stored hashed, valid until ``expires_at`` or first use."""

    __tablename__ = "one_time_token"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[OneTimePurpose] = mapped_column(
        Enum(OneTimePurpose, name="one_time_purpose", values_callable=lambda e: [m.value for m in e]))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
