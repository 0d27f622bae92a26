"""The media plugin's public API: the stored media of a vendor's conversations, and WhatsApp's media limits.

A plugin that ``requires`` media imports from here and nowhere else in ``kloyst_plugins.media``;
everything else in the package may change without notice.

* :func:`find_media` — one media of a vendor as a :class:`MediaItem` (None if it is not that
  vendor's): to send an uploaded media as a reply, use ``meta_media_id`` when ``status`` is
  ``stored`` and ``direction`` is ``outbound`` (Meta keeps uploads 30 days).
* :func:`media_for_inbound` — the media of many inbound messages at once (one query), for a thread.
* :func:`media_json` — the JSON ``GET /v1/media/{id}`` answers, to embed in another answer;
  ``/v1/media/{id}/content`` serves the bytes of a ``stored`` one.
* :data:`MEDIA_LIMITS` — kind → :class:`MediaLimit` (``mime_types``, ``max_bytes``), Meta's
  table; a static sticker is held to :data:`STATIC_STICKER_MAX_BYTES`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from kloyst_plugins.media.limits import KINDS, MEDIA_LIMITS, MediaLimit, STATIC_STICKER_MAX_BYTES
from kloyst_plugins.media.models import Direction, Media, MediaStatus
from kloyst_plugins.media.services import media_json as _media_json


@dataclass(frozen=True)
class MediaItem:
    """What another plugin may know of a media (never its key or its file's place)."""

    id: uuid.UUID
    vendor_id: uuid.UUID
    direction: str  # Direction: outbound (uploaded) | inbound (from a customer)
    kind: str  # image | video | audio | document | sticker
    status: str  # MediaStatus: pending | stored | quarantined | expired | failed | removed
    mime_type: str | None
    size_bytes: int | None
    sha256: str | None
    filename: str | None
    meta_media_id: str | None
    phone_number_id: uuid.UUID
    inbound_id: uuid.UUID | None
    created_at: dt.datetime
    json: dict[str, Any]  # media_json() of it: what GET /v1/media/{id} answers

    @property
    def stored(self) -> bool:
        return self.status == MediaStatus.STORED.value


def _item(media: Media) -> MediaItem:
    return MediaItem(id=media.id, vendor_id=media.vendor_id, direction=media.direction, kind=media.kind,
                     status=media.status, mime_type=media.mime_type, size_bytes=media.size_bytes,
                     sha256=media.sha256, filename=media.filename, meta_media_id=media.meta_media_id,
                     phone_number_id=media.phone_number_id, inbound_id=media.inbound_id,
                     created_at=media.created_at, json=_media_json(media))


def find_media(db, vendor_id: uuid.UUID, media_id: uuid.UUID) -> MediaItem | None:
    """The vendor's media ``media_id``, or None (also when it is another vendor's)."""
    media = db.scalars(select(Media).where(Media.vendor_id == vendor_id, Media.id == media_id)).first()
    return _item(media) if media is not None else None


def media_for_inbound(db, vendor_id: uuid.UUID, inbound_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, MediaItem]:
    """``{inbound message id: its media}`` for those of ``inbound_ids`` that carried one (one query)."""
    ids = list(dict.fromkeys(inbound_ids))
    if not ids:
        return {}
    rows = db.scalars(select(Media).where(Media.vendor_id == vendor_id, Media.inbound_id.in_(ids)))
    return {media.inbound_id: _item(media) for media in rows if media.inbound_id is not None}


def media_json(item: MediaItem) -> dict[str, Any]:
    return item.json


__all__ = [
    "Direction",
    "find_media",
    "KINDS",
    "MEDIA_LIMITS",
    "media_for_inbound",
    "media_json",
    "MediaItem",
    "MediaLimit",
    "MediaStatus",
    "STATIC_STICKER_MAX_BYTES",
]
