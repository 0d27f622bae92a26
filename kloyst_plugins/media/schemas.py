"""What the media API answers, and the list's filters (the upload itself is multipart: :mod:`.upload`)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import Field

from kloyst.api import Answer, Listing, Page
from kloyst_plugins.media.models import Direction, MediaStatus

Kind = Literal["image", "video", "audio", "document", "sticker"]


class MediaOut(Answer):
    """A media of the vendor's conversations: uploaded to send, or received from a customer."""

    id: uuid.UUID
    direction: Direction = Field(description="`outbound`: uploaded to send; `inbound`: sent by a customer.")
    kind: Kind
    status: MediaStatus = Field(description="`pending`, `stored` (the only one whose content is served), "
                                            "`quarantined` (failed the virus scan), `expired` (gone at Meta), "
                                            "`failed` (see `error`), `removed` (its retention ran out).")
    phone_number_id: uuid.UUID
    inbound_id: uuid.UUID | None = Field(description="The inbound message that carried it.")
    meta_media_id: str | None = Field(description="Meta's media id (an upload's is what a reply sends).")
    mime_type: str | None
    size_bytes: int | None
    sha256: str | None
    filename: str | None
    scan_result: str | None = Field(description="The virus scanner's verdict, or why the media waits for it.")
    attempts: int = Field(description="Fetches from Meta tried so far (inbound media).")
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    stored_at: dt.datetime | None


class MediaAnswer(Answer):
    media: MediaOut


class MediaPage(Listing[MediaOut]):
    """Media, newest first."""


class MediaListQuery(Page):
    inbound_id: uuid.UUID | None = None
    kind: Kind | None = None
    status: MediaStatus | None = None
    direction: Direction | None = None
    phone_number_id: uuid.UUID | None = None
