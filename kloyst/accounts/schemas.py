"""What the accounts API answers: a vendor and its users, as every auth and account route shows them.

One model per representation (``VendorOut``, ``UserOut``), shared by the sign-up, sign-in and
``/vendor`` answers, so a field added to a user appears, and is documented, everywhere at once.
"""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field

from kloyst.accounts.models import Role, VendorStatus
from kloyst.http.pagination import Listing
from kloyst.http.validation import Answer


class VendorOut(Answer):
    """A vendor (a tenant): the business whose contacts, campaigns and wallet these are."""

    id: uuid.UUID
    name: str
    status: VendorStatus
    created_at: dt.datetime


class UserOut(Answer):
    """A person who signs in: a vendor's owner, admin or member, or a platform admin (no vendor)."""

    id: uuid.UUID
    email: str
    name: str
    role: Role = Field(description="The role in the vendor (a platform admin's means nothing).")
    vendor_id: uuid.UUID | None = Field(description="The user's vendor; null for a platform admin.")
    is_platform_admin: bool
    email_verified: bool = Field(description="Whether the address was confirmed with the mailed link.")
    disabled: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None


class VendorAnswer(Answer):
    vendor: VendorOut


class UserAnswer(Answer):
    user: UserOut


class UserPage(Listing[UserOut]):
    """The vendor's users, newest first."""
