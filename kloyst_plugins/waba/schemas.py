"""What a client may send to the waba API (vendors) and to its shared-WABA admin API, and what they answer.

Meta ids are digit strings (``"102290129340398"``); checking that here turns a pasted URL
or a phone number into a 422 naming the field, instead of a sync that fails later at Meta.
Tokens are only ever accepted, never echoed: pydantic's messages leave input values out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import Field

from kloyst.api import Answer, Listing, Page, PlainText, Schema
from kloyst_plugins.waba.models import SyncStatus

MAX_TOKEN_LENGTH = 4096  # Meta's system-user tokens are a few hundred characters

MetaId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9]+$",
                              description="a Meta id: digits only")]
Name = Annotated[PlainText, Field(min_length=1, max_length=200)]
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
    status: PlainText | None = Field(default=None, min_length=1, max_length=32)


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


SyncState = Annotated[SyncStatus, Field(
    description="The phone-number sync: `queued` until it has run (numbers are not listed yet), `synced`, or "
                "`failed` (`last_sync_error` says why).")]


class WabaOut(Answer):
    """A WhatsApp Business Account the vendor registered; its access token is never shown."""

    id: uuid.UUID
    meta_waba_id: str
    name: str
    business_id: str | None
    has_access_token: bool
    last_synced_at: dt.datetime | None = Field(description="When its phone numbers were last read from Meta.")
    last_sync_error: str | None
    sync_status: SyncState
    created_at: dt.datetime
    updated_at: dt.datetime


class SharedWabaOut(Answer):
    """The platform's shared WABA, whose numbers platform admins assign to vendors."""

    id: uuid.UUID
    meta_waba_id: str
    name: str
    has_access_token: bool
    last_synced_at: dt.datetime | None
    last_sync_error: str | None
    sync_status: SyncState
    created_at: dt.datetime
    updated_at: dt.datetime


class PhoneNumberOut(Answer):
    """A number the vendor can send from: of its own WABA, or assigned from the shared one."""

    id: uuid.UUID = Field(description="Kloyst's id: the `phone_number_id` of a send or a campaign.")
    meta_phone_number_id: str
    waba_id: uuid.UUID | None
    shared: bool
    shared_waba_id: uuid.UUID | None
    display_phone_number: str
    verified_name: str
    quality_rating: str
    throughput_mps: int = Field(description="Meta's messages per second for the number (80 or 1,000).")
    status: str = Field(description="Meta's status, such as CONNECTED; only a CONNECTED number sends.")
    messaging_limit_tier: str | None
    last_synced_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SharedPhoneNumberOut(Answer):
    id: uuid.UUID
    shared_waba_id: uuid.UUID
    meta_phone_number_id: str
    display_phone_number: str
    verified_name: str
    quality_rating: str
    throughput_mps: int
    status: str
    messaging_limit_tier: str | None
    assigned_vendor_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


Queued = Annotated[Literal["queued"], Field(description="A sync of the phone numbers was queued.")]


class WabaAnswer(Answer):
    waba: WabaOut
    sync: Queued | None = None
    next: str | None = Field(default=None, description="On registration: the numbers sync in the background; "
                                                        "poll the WABA until `sync_status` is `synced`.")


class SharedWabaAnswer(Answer):
    shared_waba: SharedWabaOut
    sync: Queued | None = None


class WabaSyncQueued(Answer):
    waba_id: uuid.UUID
    sync: Queued
    already_queued: bool = Field(description="True when a sync of this WABA was already queued or running: this "
                                             "request queued no other, and that sync's outcome answers it.")


class SharedWabaSyncQueued(Answer):
    shared_waba_id: uuid.UUID
    sync: Queued


class PhoneNumberAnswer(Answer):
    phone_number: PhoneNumberOut


class Assignment(Answer):
    shared_phone_number: SharedPhoneNumberOut
    phone_number: PhoneNumberOut | None = Field(description="The vendor's copy of the number; null once unassigned.")


class WabaPage(Listing[WabaOut]):
    """The vendor's WABAs, newest first."""


class SharedWabaPage(Listing[SharedWabaOut]):
    """Shared WABAs, newest first."""


class PhoneNumberPage(Listing[PhoneNumberOut]):
    """The numbers the vendor can send from, newest first."""


class SharedPhoneNumberPage(Listing[SharedPhoneNumberOut]):
    """The shared WABAs' numbers, newest first."""
