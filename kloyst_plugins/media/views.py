"""The media HTTP API, under ``/v1/media``: upload, list, read, and the content of a stored media.

Views are thin: :mod:`.services` owns the upload and the states, :mod:`.storage` the file.
The plugin gate, tenant scoping of ``{id}`` (``model=Media``: another vendor's id is 404) and
the default ``vendor.member`` permission come from the framework.
"""

from __future__ import annotations

import itertools
from urllib.parse import quote

from pyramid.response import Response
from sqlalchemy import select

from kloyst.api import openapi, paginate
from kloyst_plugins.media import limits, services, storage, upload
from kloyst_plugins.media.models import Media
from kloyst_plugins.media.schemas import MediaAnswer, MediaListQuery, MediaPage

# Shown in the browser when asked for; anything else (documents, and whatever type a customer's
# media claims) is an attachment, so a file is never rendered as a page of Kloyst's origin.
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "video/mp4", "video/3gpp", "audio/aac",
                          "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"})


def create_media(request):
    media = services.upload_media(request)
    request.response.status_int = 201
    request.response.headers["Location"] = request.route_path("media.item", id=media.id)
    return {"media": services.media_json(media)}


def list_media(request):
    query = request.validated_query()
    statement = select(Media)
    for column in ("inbound_id", "kind", "status", "direction", "phone_number_id"):
        value = getattr(query, column)
        if value is not None:
            statement = statement.where(getattr(Media, column) == getattr(value, "value", value))
    page = paginate(request.db, statement, Media, query)
    return {"items": [services.media_json(m) for m in page.items], "next_cursor": page.next_cursor}


def get_media(request):
    return {"media": services.media_json(request.context)}


def media_content(request):
    media = request.context
    services.content_or_refusal(media)
    mime = media.mime_type or "application/octet-stream"
    response = Response(content_type=mime)
    response.content_length = media.size_bytes
    extension = limits.EXTENSIONS.get(mime)
    name = media.filename or f"{media.kind}-{media.id}" + (f".{extension}" if extension else "")
    disposition = "inline" if mime in INLINE_TYPES and media.kind != "document" else "attachment"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    response.headers["Content-Disposition"] = (f'{disposition}; filename="{ascii_name}"; '
                                               f"filename*=UTF-8''{quote(name)}")
    response.headers["Cache-Control"] = "private, max-age=3600"
    chunks = storage.read_chunks(request.registry.settings, request.registry["kloyst.cipher"], media.vendor_id,
                                 media.id, media.stored_name, media.file_key_enc)
    # The first segment is read before the answer starts: a missing or damaged file is an error answer, not a
    # 200 that breaks off. Later segments were written in the same go and authenticate the same way.
    first = next(chunks)
    response.app_iter = itertools.chain([first], chunks)
    return response


def includeme(config) -> None:
    # The upload is the one large body: the tween allows the largest media (a 100 MB document)
    # plus room for the multipart envelope on POST /media only; the upload reader then holds
    # each file to its own kind's limit while it streams.
    settings = config.get_settings()
    prefix = settings["kloyst.api.prefix"].strip("/")
    config.add_body_limit(f"/{prefix}/media" if prefix else "/media", limits.LARGEST_BYTES + 64 * 1024, exact=True)

    config.add_route("media.collection", "/media")
    config.add_view(create_media, route_name="media.collection", request_method="POST", renderer="json",
                    status=201, response_schema=MediaAnswer, rate_cost=10,
                    openapi=openapi.multipart(
                        {upload.FILE_FIELD: "file: the media (JPEG, PNG, MP4, 3GPP, AAC, AMR, MP3, M4A, OGG Opus, "
                                            "PDF, TXT, Office documents, WebP stickers)",
                         "phone_number_id": "the id of the phone number the media will be sent from"},
                        {"kind": "image, video, audio, document or sticker (default: from the file's type)"}))
    config.add_view(list_media, route_name="media.collection", request_method="GET", renderer="json",
                    query_schema=MediaListQuery, response_schema=MediaPage)
    config.add_route("media.item", "/media/{id}", model=Media)
    config.add_view(get_media, route_name="media.item", request_method="GET", renderer="json",
                    response_schema=MediaAnswer)
    config.add_route("media.item.content", "/media/{id}/content", model=Media)
    config.add_view(media_content, route_name="media.item.content", request_method="GET",
                    openapi=openapi.download("application/octet-stream", *sorted(INLINE_TYPES)))
