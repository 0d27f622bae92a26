"""Builders for Meta's send-message bodies, so no caller hand-writes Meta's JSON.

A message goes to a phone number (``to``) or, for a user known only by a business-scoped user
ID, to that BSUID (``recipient``). Meta reads ``to`` when both are present and recommends the
phone number whenever it is known, so the builders take one or the other: ``to`` positionally
(may be None) and ``recipient=`` by keyword.

Template parameters are positional (a list, for ``{{1}}``-style templates) or named (a mapping, for templates
created with ``parameter_format: NAMED``); Meta refuses a mix, so the type of the argument decides. A
parameter that is already a dict (currency, date_time, image, …) is passed through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Params = Sequence[Any] | Mapping[str, Any]


def _base(to: str | None, kind: str, biz_opaque_callback_data: str | None, reply_to: str | None,
          recipient: str | None = None) -> dict[str, Any]:
    if bool(to) == bool(recipient):
        raise ValueError("address a message to a phone number (to) or to a BSUID (recipient), exactly one")
    payload: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    if to:
        payload["to"] = to
    else:
        payload["recipient"] = recipient
    payload["type"] = kind
    if reply_to:
        payload["context"] = {"message_id": reply_to}
    if biz_opaque_callback_data is not None:
        # Echoed back in status webhooks: Kloyst puts its message id here to detect a send Meta accepted
        # before a crash.
        payload["biz_opaque_callback_data"] = biz_opaque_callback_data
    return payload


def text_payload(to: str | None, body: str, *, preview_url: bool = False, reply_to: str | None = None,
                 biz_opaque_callback_data: str | None = None, recipient: str | None = None) -> dict[str, Any]:
    payload = _base(to, "text", biz_opaque_callback_data, reply_to, recipient)
    payload["text"] = {"body": body, "preview_url": preview_url}
    return payload


def message_payload(to: str | None, kind: str, content: Mapping[str, Any] | Sequence[Any], *,
                    reply_to: str | None = None, biz_opaque_callback_data: str | None = None,
                    recipient: str | None = None) -> dict[str, Any]:
    """Any free-form message: ``kind`` is Meta's ``type`` (image, video, audio, document, sticker, location,
    contacts, interactive, reaction, text) and ``content`` its object (a list for ``contacts``), e.g.
    ``message_payload(None, "image", {"id": media_id, "caption": "Hi"}, recipient="US.1349…")``."""
    payload = _base(to, kind, biz_opaque_callback_data, reply_to, recipient)
    payload[kind] = list(content) if kind == "contacts" else dict(content)
    return payload


def _parameter(value: Any, name: str | None = None) -> dict[str, Any]:
    if isinstance(value, Mapping):
        param = dict(value)
    else:
        param = {"type": "text", "text": str(value)}
    if name is not None:
        param["parameter_name"] = name
    return param


def parameters(params: Params) -> list[dict[str, Any]]:
    """``["Ann", "FALL25"]`` → positional text parameters; ``{"first_name": "Ann"}`` → named ones."""
    if isinstance(params, Mapping):
        return [_parameter(value, str(name)) for name, value in params.items()]
    if isinstance(params, (str, bytes)):
        raise TypeError("template parameters are a list (positional) or a mapping (named), not a string")
    return [_parameter(value) for value in params]


def template_payload(to: str | None, name: str, language: str, *, body: Params | None = None,
                     header: Params | None = None, buttons: Sequence[Mapping[str, Any]] = (),
                     components: Sequence[Mapping[str, Any]] = (), policy: str | None = None,
                     biz_opaque_callback_data: str | None = None, recipient: str | None = None) -> dict[str, Any]:
    """A template message. ``buttons`` items are ``{"sub_type": "url", "index": 0, "parameters": [...]}``;
    ``components`` are appended verbatim for shapes the shortcuts do not cover (carousels, flows)."""
    built: list[dict[str, Any]] = []
    if header:
        built.append({"type": "header", "parameters": parameters(header)})
    if body:
        built.append({"type": "body", "parameters": parameters(body)})
    for button in buttons:
        built.append({"type": "button", "sub_type": button["sub_type"], "index": str(button["index"]),
                      "parameters": parameters(button.get("parameters", []))})
    built.extend(dict(component) for component in components)
    language_obj: dict[str, str] = {"code": language}
    if policy:
        language_obj["policy"] = policy
    template: dict[str, Any] = {"name": name, "language": language_obj}
    if built:
        template["components"] = built
    payload = _base(to, "template", biz_opaque_callback_data, None, recipient)
    payload["template"] = template
    return payload
