"""Accounts for tests: vendors and users made straight in the database, with signed access tokens.

Re-exported by :mod:`kloyst.testing` (``kloyst.testing.AccountFactory``), which loads this module on first use.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from kloyst.accounts.models import Role, User, Vendor
from kloyst.auth.models import RefreshToken
from kloyst.auth.passwords import hash_password
from kloyst.auth.tokens import new_secret, secret_hash
from kloyst.db import tenancy, utcnow
from kloyst.testing import TEST_PASSWORD

__all__ = ["Account", "AccountFactory"]


@dataclass
class Account:
    """A user as tests need it: the rows, and a ready ``Authorization`` header."""

    user: User
    vendor: Vendor | None
    token: str
    session_id: uuid.UUID | None = None  # the refresh-token family ``token`` belongs to

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def vendor_id(self) -> uuid.UUID | None:
        return self.vendor.id if self.vendor else None


class AccountFactory:
    """Creates vendors and users straight in the database and signs access tokens for them."""

    def __init__(self, session, codec) -> None:
        self.session = session
        self.codec = codec
        self._count = 0

    def _email(self, hint: str) -> str:
        self._count += 1
        return f"{hint}-{self._count}-{uuid.uuid4().hex[:6]}@example.com"

    def token_for(self, user: User) -> str:
        """An access token in a session of its own (a refresh-token family), as signing in gives."""
        return self.token_in_session(user)[0]

    def token_in_session(self, user: User) -> tuple[str, uuid.UUID]:
        """An access token and its session id; revoking that refresh-token family ends the token."""
        family = uuid.uuid4()
        self.session.add(RefreshToken(family_id=family, user_id=user.id, token_hash=secret_hash(new_secret()),
                                      expires_at=utcnow() + dt.timedelta(days=1)))
        self.session.flush()
        token, _ = self.codec.issue(user_id=user.id, vendor_id=user.vendor_id, role=user.role.value,
                                    token_version=user.token_version, session_id=family)
        return token, family

    def vendor(self, name: str = "Acme", *, role: Role = Role.OWNER, verified: bool = True) -> Account:
        with tenancy.unscoped(self.session):
            vendor = Vendor(name=name)
            self.session.add(vendor)
            self.session.flush()
        return self.user(vendor, role=role, verified=verified)

    def user(self, vendor: Vendor, *, role: Role = Role.MEMBER, verified: bool = True,
             password: str = TEST_PASSWORD) -> Account:
        with tenancy.unscoped(self.session):
            user = User(vendor_id=vendor.id, email=self._email(role.value), name=f"{role.value} user",
                        password_hash=hash_password(password), role=role,
                        email_verified_at=utcnow() if verified else None)
            self.session.add(user)
            self.session.flush()
        return Account(user, vendor, *self.token_in_session(user))

    def platform_admin(self) -> Account:
        with tenancy.unscoped(self.session):
            user = User(vendor_id=None, email=self._email("admin"), name="Platform admin",
                        password_hash=hash_password(TEST_PASSWORD), role=Role.MEMBER, is_platform_admin=True,
                        email_verified_at=utcnow())
            self.session.add(user)
            self.session.flush()
        return Account(user, None, *self.token_in_session(user))
