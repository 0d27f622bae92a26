"""What the auth routes answer: acknowledgements, verification, the token pair and ``/auth/me``.

The request bodies are beside the views (:mod:`kloyst.auth.views`); these are the success
answers the OpenAPI document shows, built on the account representations of
:mod:`kloyst.accounts.schemas`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from kloyst.accounts.schemas import UserOut, VendorOut
from kloyst.http.validation import Answer


class Acknowledged(Answer):
    """A request taken in (sign-up, an invitation, a mailed link asked for).

    The answer is the same whether or not the address has an account: the mail tells the
    address's owner what happened.
    """

    status: str = Field(description="What happens next, for people.")


class PasswordReset(Answer):
    user: UserOut
    next: str = Field(description="What to do next, for people.")


class TokenPair(Answer):
    """A short-lived access token (a JWT for ``Authorization: Bearer``) and the refresh token that renews it."""

    token_type: Literal["Bearer"]
    access_token: str
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str = Field(description="Opaque; POST it to /auth/refresh for a new pair (it is used up).")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class Me(Answer):
    """Who the access token is, and what its vendor has switched on."""

    user: UserOut
    vendor: VendorOut | None = Field(description="Null for a platform admin.")
    enabled_plugins: list[str]
    token_expires_at: dt.datetime
