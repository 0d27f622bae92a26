"""Vendor (a tenant) and User (a person who signs in, inside one vendor or as a platform admin)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kloyst.db import Base, TenantScoped, Timestamped, new_id


class VendorStatus(str, enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Role(str, enum.Enum):
    """Roles inside a vendor, weakest first; platform admins stand outside vendors."""

    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class Vendor(Timestamped, Base):
    __tablename__ = "vendor"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[VendorStatus] = mapped_column(
        Enum(VendorStatus, name="vendor_status", values_callable=lambda e: [m.value for m in e]),
        default=VendorStatus.ACTIVE)

    users: Mapped[list[User]] = relationship(back_populates="vendor")


class User(TenantScoped, Timestamped, Base):
    """A person. ``vendor_id`` is NULL only for platform admins, who belong to no vendor.

    Users are tenant-owned like any other model, so a vendor's routes only ever see their
    own users; sign-in and token checks look a user up inside ``tenancy.unscoped`` because
    no vendor is known until the user is found.
    """

    __tablename__ = "app_user"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # The one tenant-owned model whose vendor may be NULL (platform admins): narrower than TenantScoped's column.
    vendor_id: Mapped[uuid.UUID | None] = mapped_column(  # type: ignore[assignment]
        ForeignKey("vendor.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="user_role", values_callable=lambda e: [m.value for m in e]), default=Role.MEMBER)
    is_platform_admin: Mapped[bool] = mapped_column(default=False, server_default="false")
    email_verified_at: Mapped[dt.datetime | None]
    disabled_at: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]
    # Bumped on password change/reset and disable: access tokens carry it, older ones stop working.
    token_version: Mapped[int] = mapped_column(default=1, server_default="1")

    vendor: Mapped[Vendor | None] = relationship(back_populates="users")

    def __repr__(self) -> str:  # never the hash
        return f"<User {self.id} {self.role.value}>"


def normalize_email(email: str) -> str:
    return email.strip().lower()


