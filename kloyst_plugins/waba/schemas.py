"""What a client may send to the waba API (vendors) and to its shared-WABA admin API.

Meta ids are digit strings (``"102290129340398"``); checking that here turns a pasted URL
or a phone number into a 422 naming the field, instead of a sync that fails later at Meta.
Tokens are only ever accepted, never echoed: pydantic's messages leave input values out.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import Field

from kloyst.http.pagination import Page
from kloyst.http.validation import Schema

MAX_TOKEN_LENGTH = 4096  # Meta's system-user tokens are a few hundred characters

MetaId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9]+$",
                              description="a Meta id: digits only")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Printable ASCII: the token travels in an HTTP header, which cannot carry "ą" (and Meta's tokens never do).
Token = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH, pattern=r"^[!-~]+$",
                             description="a Meta access token (printable ASCII, no spaces)")]


class WabaCreate(Schema):
    meta_waba_id: MetaId
    name: Name
    access_token: Token
    business_id: MetaId | None = None


class WabaPatch(Schema):
    """Fields left out are kept; ``access_token`` replaces the stored token (and a sync follows)."""

    name: Name | None = None
    access_token: Token | None = None


class PhoneNumberQuery(Page):
    waba_id: uuid.UUID | None = None
    status: str | None = Field(default=None, min_length=1, max_length=32)


class SharedWabaCreate(Schema):
    meta_waba_id: MetaId
    name: Name
    access_token: Token


class SharedPhoneNumberQuery(Page):
    shared_waba_id: uuid.UUID | None = None
    assigned_vendor_id: uuid.UUID | None = None
    assigned: bool | None = None  # true: only assigned numbers; false: only free ones


class AssignBody(Schema):
    vendor_id: uuid.UUID
