"""One campaign message's content, a million times: Meta's payload for each recipient, sealed.

A campaign sends one template with per-recipient values, so the payload's JSON is the same
text every time except for the recipient's number, the message id and the variable values.
:class:`Renderer` builds that text once through the templates plugin's ``build_payload`` (the
very function a single send goes through, so the checks and Meta's shape are shared), with
markers where the values go, and then fills the markers by string joins: each value is
JSON-encoded exactly as ``json.dumps`` would encode it inside the whole document, so the
result is byte-for-byte what ``seal_content(build_payload(...))`` would seal (a test holds it
to that), at a fraction of the cost.

Values come from the contact as the mapping says (:mod:`kloyst_plugins.templates.parameters`),
with whitespace folded to single spaces: Meta refuses a parameter with a new line, a tab or
more than four spaces in a row, and a name typed with a line break should not cost its
message. An empty value takes the mapping's default (the draft checks guarantee one).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from json.encoder import encode_basestring

from kloyst.api import FieldCipher
from kloyst_plugins.messages.api import CONTENT_FIELD
from kloyst_plugins.templates.api import ATTRIBUTE_PREFIX, HEADER_KEY_PREFIX, build_payload

_MARK = "\x1fkloyst-{}\x1f"
_TO, _ID = "to", "id"


@dataclass(frozen=True)
class Slot:
    """Where one variable's value comes from: a fixed value, or a contact field with a default."""

    value: str | None = None
    field: str | None = None
    default: str | None = None


def fold(value) -> str | None:
    """A contact value as a Meta text parameter: whitespace folded to single spaces; None when empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = " ".join(str(value).split())
    return text or None


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# A string as json.dumps(..., ensure_ascii=False) writes it, without building an encoder per call (C, ~0.1 µs).
_string = encode_basestring


class Renderer:
    """Seals per-recipient payloads of one template, mapping and buttons for one vendor."""

    def __init__(self, template, mapping: dict, buttons: list, *, cipher: FieldCipher, vendor_id: uuid.UUID) -> None:
        self.cipher = cipher
        self.vendor_id = vendor_id
        self.slots: list[Slot] = []
        header = self._markers(template, template.header_variables, HEADER_KEY_PREFIX, mapping)
        body = self._markers(template, template.body_variables, "", mapping)
        skeleton = build_payload(template, _MARK.format(_TO), body=body, header=header,
                                            buttons=buttons or (), biz_opaque_callback_data=_MARK.format(_ID))
        text = _dumps(skeleton)
        # Split the document at each marker (with its quotes): parts[i] comes before the i-th value.
        order = []
        for name in [_TO, _ID, *range(len(self.slots))]:
            order.append((text.index(_dumps(_MARK.format(name))), name))
        order.sort()
        self.parts: list[str] = []
        self.order: list = []
        position = 0
        for index, name in order:
            self.parts.append(text[position:index])
            self.order.append(name)
            position = index + len(_dumps(_MARK.format(name)))
        self.parts.append(text[position:])
        # The same document addressed to a BSUID: Meta's ``recipient`` instead of ``to`` (same place, same order).
        at = self.order.index(_TO)
        if not self.parts[at].endswith('"to":'):
            raise RuntimeError("the payload's recipient number is not its 'to' field")
        self.bsuid_parts = list(self.parts)
        self.bsuid_parts[at] = self.parts[at].removesuffix('"to":') + '"recipient":'
        self.fields = {s.field for s in self.slots if s.field}
        self.needs_name = "name" in self.fields
        self.needs_attributes = any(f.startswith(ATTRIBUTE_PREFIX) for f in self.fields)

    def _markers(self, template, variables, prefix: str, mapping: dict):
        if not variables:
            return None
        markers = {}
        for variable in variables:
            spec = mapping[prefix + variable]
            slot = (Slot(value=spec["value"]) if "value" in spec
                    else Slot(field=spec["field"], default=fold(spec.get("default"))))
            markers[variable] = _MARK.format(len(self.slots))
            self.slots.append(slot)
        if template.parameter_format == "NAMED":
            return markers
        return [markers[v] for v in variables]

    def values(self, *, mobile: str | None, name: str | None = None, country: str | None = None,
               attributes: dict | None = None) -> list[str] | None:
        """The variables' values for one contact, in slot order; None if one has no value (then: skip it)."""
        found = []
        for slot in self.slots:
            if slot.value is not None:
                found.append(slot.value)
                continue
            field = slot.field
            if field == "mobile":
                value = mobile
            elif field == "name":
                value = fold(name)
            elif field == "country":
                value = country
            else:
                value = fold((attributes or {}).get(field.removeprefix(ATTRIBUTE_PREFIX)))
            value = value or slot.default
            if value is None:
                return None
            found.append(value)
        return found

    def text(self, to: str, message_id: uuid.UUID | str, values: list[str], *, bsuid: bool = False) -> str:
        """The payload's JSON text (what ``seal_content`` would encrypt); with ``bsuid``, ``to`` is a BSUID and
        goes in Meta's ``recipient`` field (what ``addressed(build_payload(...), "recipient")`` would seal)."""
        parts = self.bsuid_parts if bsuid else self.parts
        pieces = [parts[0]]
        for name, part in zip(self.order, parts[1:]):
            if name == _TO:
                pieces.append(_string(to))
            elif name == _ID:
                pieces.append(f'"{message_id}"')
            else:
                pieces.append(_string(values[name]))
            pieces.append(part)
        return "".join(pieces)

    def seal(self, to: str, message_id: uuid.UUID | str, values: list[str], *, bsuid: bool = False) -> bytes:
        return self.cipher.encrypt(self.text(to, message_id, values, bsuid=bsuid), vendor_id=self.vendor_id,
                                   field=CONTENT_FIELD)
