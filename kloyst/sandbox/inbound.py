"""A simulated customer writes to a business number: ``POST /_sandbox/customers/inbound``, ``kloyst sandbox inbound``.

The request names the business number and the customer, by phone (``from``), by BSUID
(``user_id``), or by username alone, and what they send. The sandbox remembers the customer,
opens the customer-service window from the message's timestamp, stores any media so its id
downloads like Meta's, and posts a signed ``messages`` webhook shaped as Meta's current one:

- ``contacts[].user_id`` (the BSUID) always, ``parent_user_id`` when given, ``profile.name``
  and ``profile.username`` when the customer has one;
- ``contacts[].wa_id``, ``messages[].from`` only when the phone number is shared: a username
  customer who has not shared it (``"phone_shared": false``, or no ``from`` at all) reaches the
  business with no phone number in the payload;
- ``messages[].from_user_id`` (and ``from_parent_user_id``) always.

Request body (JSON; only ``phone_number_id`` and one way to name the customer are required)::

    {"phone_number_id": "100000000000001",
     "from": "+4917100000001", "user_id": "DE.123…", "parent_user_id": "DE.ENT.9…",
     "username": "ada.l", "name": "Ada", "phone_shared": true, "country": "DE",
     "type": "text",                        # text (default), image, video, audio, document, sticker,
                                            # button, interactive, location, reaction
     "text": "Hello",                       # type text
     "media": {"data_base64": "…", "mime_type": "image/jpeg", "filename": "a.jpg", "caption": "…"},
     "button": {"payload": "STOP", "text": "Stop promotions"},       # a template's quick reply
     "interactive": {"type": "button_reply", "id": "yes", "title": "Yes"},  # or list_reply (+ description)
     "location": {"latitude": 52.52, "longitude": 13.40, "name": "…", "address": "…"},
     "reaction": {"message_id": "wamid.…", "emoji": "👍"},
     "context": {"id": "wamid.…"},          # the business message replied to (default for button and
                                            # interactive: the last one sent to this customer)
     "timestamp": 1764950000}               # unix seconds; default now (the window opens from it)

The answer: ``{"id": wamid, "user_id", "wa_id" (null when withheld), "media_id" (media only),
"window_open_until" (unix seconds)}``. The older body ``{"phone_number_id", "from", "text", "name"}``
of ``POST /_sandbox/inbound`` is the same request.
"""

from __future__ import annotations

import base64
import binascii
import time

from kloyst.sandbox.customers import BSUID, PARENT_BSUID, USERNAME, Customer, derived_bsuid, username_bsuid
from kloyst.sandbox.graph import MEDIA_TYPES, RECIPIENT, new_wamid
from kloyst.sandbox.media import SUPPORTED, new_media
from kloyst.sandbox.state import SandboxState

INBOUND_TYPES = ("text", *MEDIA_TYPES, "button", "interactive", "location", "reaction")


class InboundError(ValueError):
    """A simulated message the sandbox cannot build; the message says what to fix (answered 400)."""


def _text(data: dict, key: str, limit: int = 4096) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InboundError(f"{key} must be a non-empty string of at most {limit} characters")
    return value


def _customer(data: dict) -> Customer:
    phone = data.get("from")
    if phone is not None:
        if not isinstance(phone, str) or not RECIPIENT.match(phone):
            raise InboundError(f"from must be a phone number in E.164 digits (with or without +), not {phone!r}")
        phone = phone.lstrip("+")
    username = data.get("username")
    if username is not None and (not isinstance(username, str) or not USERNAME.match(username)):
        raise InboundError("username must be 3 to 35 letters, digits, periods or underscores")
    user_id = data.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or not BSUID.match(user_id)
                                or PARENT_BSUID.match(user_id)):
        raise InboundError("user_id must be a business-scoped user ID such as US.13491208655302741918")
    parent = data.get("parent_user_id")
    if parent is not None and (not isinstance(parent, str) or not PARENT_BSUID.match(parent)):
        raise InboundError("parent_user_id must be a parent BSUID such as US.ENT.11815799212886844830")
    country = data.get("country", "US")
    if not (isinstance(country, str) and len(country) == 2 and country.isalpha() and country.isupper()):
        raise InboundError("country must be a two-letter ISO country code such as DE")
    if phone is None and user_id is None and username is None:
        raise InboundError("name the customer: from (a phone number), user_id (a BSUID) or username")
    shared = data.get("phone_shared", phone is not None)
    if not isinstance(shared, bool):
        raise InboundError("phone_shared must be true or false")
    if user_id is None:
        user_id = derived_bsuid(phone) if phone else username_bsuid(str(username), country)
    name = data.get("name", "Sandbox User")
    if not isinstance(name, str) or len(name) > 256:
        raise InboundError("name must be a string of at most 256 characters")
    return Customer(user_id=user_id, phone=phone, phone_shared=shared and phone is not None, username=username,
                    parent_user_id=parent, name=name)


def _content(state: SandboxState, kind: str, data: dict) -> tuple[dict, str | None]:
    """The message's type-specific part, and the media id it carries (media only)."""
    if kind == "text":
        return {"text": {"body": _text(data, "text")}}, None
    if kind in MEDIA_TYPES:
        spec = data.get("media")
        if not isinstance(spec, dict):
            raise InboundError("media must be an object with data_base64 and mime_type")
        try:
            raw = base64.b64decode(str(spec.get("data_base64", "")), validate=True)
        except (binascii.Error, ValueError):
            raise InboundError("media.data_base64 must be the file's bytes in base64") from None
        mime_type = str(spec.get("mime_type", "")).lower()
        expected = "sticker" if mime_type == "image/webp" else SUPPORTED.get(mime_type, ("", 0))[0]
        if not raw or expected != kind and not (kind == "document" and mime_type in SUPPORTED):
            raise InboundError(f"media.mime_type {mime_type!r} is not a supported {kind} type "
                               f"(and data_base64 must not be empty)")
        media = new_media(state.new_id(), raw, mime_type, spec.get("filename"))
        with state.lock:
            state.media.add(media, state.behaviour.media_ttl_seconds)
        part: dict = {"mime_type": mime_type, "sha256": media.sha256_base64, "id": media.id}
        if kind == "audio":
            part["voice"] = bool(spec.get("voice", False))
        if kind == "sticker":
            part["animated"] = bool(spec.get("animated", False))
        if kind == "document" and media.filename:
            part["filename"] = str(media.filename)
        if spec.get("caption") and kind in ("image", "video", "document"):
            part["caption"] = str(spec["caption"])
        return {kind: part}, media.id
    if kind == "button":
        spec = data.get("button")
        if not isinstance(spec, dict):
            raise InboundError("button must be an object with payload and text")
        return {"button": {"payload": _text(spec, "payload", 256), "text": _text(spec, "text", 256)}}, None
    if kind == "interactive":
        spec = data.get("interactive")
        if not isinstance(spec, dict) or spec.get("type") not in ("button_reply", "list_reply"):
            raise InboundError("interactive must be an object with type button_reply or list_reply, id and title")
        reply = {"id": _text(spec, "id", 256), "title": _text(spec, "title", 256)}
        if spec["type"] == "list_reply" and spec.get("description"):
            reply["description"] = str(spec["description"])
        return {"interactive": {"type": spec["type"], spec["type"]: reply}}, None
    if kind == "location":
        spec = data.get("location")
        if not isinstance(spec, dict):
            raise InboundError("location must be an object with numeric latitude and longitude")
        try:
            latitude, longitude = float(spec["latitude"]), float(spec["longitude"])
        except (KeyError, TypeError, ValueError):
            raise InboundError("location must be an object with numeric latitude and longitude") from None
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise InboundError("location latitude must lie in [-90, 90] and longitude in [-180, 180]")
        location: dict = {"latitude": latitude, "longitude": longitude}
        for key in ("name", "address", "url"):
            if spec.get(key):
                location[key] = str(spec[key])
        return {"location": location}, None
    reaction = data.get("reaction")  # the last type: reaction
    if not isinstance(reaction, dict) or not isinstance(reaction.get("message_id"), str) \
            or not isinstance(reaction.get("emoji"), str):
        raise InboundError("reaction must be an object with message_id and emoji")
    return {"reaction": {"message_id": reaction["message_id"], "emoji": reaction["emoji"]}}, None


def _last_sent(state: SandboxState, number_id: str, customer: Customer) -> str | None:
    with state.lock:
        records = list(state.sends)
    for record in reversed(records):
        if record["phone_number_id"] == number_id and (
                record["user_id"] == customer.user_id or customer.phone and record["to"] == customer.phone):
            return record["id"]
    return None


def build(state: SandboxState, data) -> tuple[object, dict, dict, dict]:
    """``(number, contact, message, answer)`` of a simulated inbound message; the customer is remembered and the
    window opened. Raises :class:`InboundError` on bad input."""
    if not isinstance(data, dict):
        raise InboundError("the body must be a JSON object")
    number_id = str(data.get("phone_number_id", ""))
    number = state.numbers.get(number_id)
    if number is None:
        raise InboundError(f"phone_number_id {number_id!r} is not a number of this sandbox")
    kind = data.get("type", "text")
    if kind not in INBOUND_TYPES:
        raise InboundError(f"type must be one of {', '.join(INBOUND_TYPES)}, not {kind!r}")
    at = data.get("timestamp", time.time())
    if not isinstance(at, (int, float)) or isinstance(at, bool) or at <= 0:
        raise InboundError("timestamp must be unix seconds")
    context = data.get("context")
    if context is not None and (not isinstance(context, dict) or not isinstance(context.get("id"), str)):
        raise InboundError("context must be an object with the id of the business message replied to")
    customer = _customer(data)
    content, media_id = _content(state, kind, data)
    wamid = new_wamid()
    with state.lock:
        customer = state.customers.remember(customer)
        state.customers.open_window(number.id, customer.user_id, float(at))
        state.inbound.append({"phone_number_id": number.id, "id": wamid, "user_id": customer.user_id,
                              "type": kind, "timestamp": float(at)})
    contact: dict = {"profile": {"name": customer.name}}
    if customer.username:
        contact["profile"]["username"] = customer.username
    if customer.wa_id:
        contact["wa_id"] = customer.wa_id
    contact["user_id"] = customer.user_id
    if customer.parent_user_id:
        contact["parent_user_id"] = customer.parent_user_id
    message: dict = {}
    if customer.wa_id:
        message["from"] = customer.wa_id
    message["from_user_id"] = customer.user_id
    if customer.parent_user_id:
        message["from_parent_user_id"] = customer.parent_user_id
    if context is None and kind in ("button", "interactive"):
        # A button press answers a business message, and Meta's webhook names it: the last one sent to this
        # customer from this number (a scan of the records, only for these rare simulated presses).
        context = {"id": _last_sent(state, number.id, customer) or new_wamid()}
    if context is not None:
        message["context"] = {"from": "".join(ch for ch in number.display_phone_number if ch.isdigit()),
                              "id": context["id"]}
    message.update({"id": wamid, "timestamp": str(int(at)), "type": kind, **content})
    answer = {"id": wamid, "user_id": customer.user_id, "wa_id": customer.wa_id,
              "window_open_until": float(at) + state.behaviour.window_seconds}
    if media_id is not None:
        answer["media_id"] = media_id
    return number, contact, message, answer
