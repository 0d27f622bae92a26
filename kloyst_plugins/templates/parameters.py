"""Template variables: found in Meta's components, checked before a send, filled in from a contact.

Why check locally: Meta refuses a send with the wrong parameters only after the message was
queued and a Graph call spent (132000, 132012), and its message names no variable. Checked
here, the caller learns before anything is queued, in words that name the variable.

Meta's rules this module applies:

* a template's variables are ``{{1}}``, ``{{2}}`` (``parameter_format`` POSITIONAL, the
  default) or ``{{first_name}}`` (NAMED), never both; HEADER (TEXT format) and BODY are
  numbered separately;
* a send gives positional values as a list (one per variable, in order) and named values as
  a mapping (exactly the template's names); a media header takes one media parameter;
* a URL button whose URL ends in ``{{1}}`` needs that value at send time.

Variable mappings (``{variable: {"field": "name", "default": "there"} | {"value": "…"}}``)
fill those values from a contact: body variables are keyed by their name (``"1"``,
``"first_name"``), header variables by ``"header."`` and their name (``"header.1"``), since
positional header and body variables share numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kloyst.api import template_payload, Unprocessable

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MEDIA_FORMATS = ("IMAGE", "VIDEO", "DOCUMENT", "LOCATION")
HEADER_KEY_PREFIX = "header."
CONTACT_FIELDS = ("name", "mobile", "country")
ATTRIBUTE_PREFIX = "attributes."
# Meta refuses text parameters with a new line or tab, or with more than four spaces in a row.
_UNSENDABLE_TEXT = re.compile(r"[\n\t]| {5,}")
# The send's sub_type for each button type of a template (OTP buttons are sent as "url").
BUTTON_SUB_TYPES = {"URL": "url", "OTP": "url", "QUICK_REPLY": "quick_reply", "COPY_CODE": "copy_code",
                    "FLOW": "flow", "CATALOG": "catalog", "MPM": "mpm"}


class TemplateParameterError(ValueError):
    """A send's parameters do not fit the template; ``problems`` says each thing to fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems

    def as_api_error(self, field: str = "parameters") -> Unprocessable:
        """The 422 of a send whose ``field`` (``parameters``, or ``variables`` when filled from a contact) is wrong."""
        return Unprocessable(f"the template parameters do not fit: {'; '.join(self.problems[:5])}",
                             code="invalid_template_parameters",
                             fields=[{"field": field, "problem": problem} for problem in self.problems])


def placeholders(text: str | None) -> list[str]:
    """The variables of ``text``, each once: positional ones by number, named ones as they first appear.

    A positional send lists its values in number order whatever order the text uses them in.
    """
    if not isinstance(text, str):
        return []
    found = list(dict.fromkeys(PLACEHOLDER.findall(text)))  # linear, whatever the text holds
    if found and all(is_positional(v) for v in found):
        found.sort(key=_number_order)
    return found


def _number_order(variable: str) -> tuple[int, str]:
    # Numeric order without int(): Python refuses to convert a digit string over 4,300 digits long.
    digits = variable.lstrip("0")
    return len(digits), digits


def is_positional(variable: str) -> bool:
    return variable.isdigit()


def component(components: Sequence[Any], kind: str) -> dict | None:
    """The first component of type ``kind`` (Meta writes types upper-case; lists may differ)."""
    for item in components or ():
        if isinstance(item, Mapping) and str(item.get("type", "")).upper() == kind:
            return dict(item)
    return None


def header_format(components: Sequence[Any]) -> str | None:
    header = component(components, "HEADER")
    if header is None:
        return None
    return str(header.get("format") or "TEXT").upper()


def header_variables(components: Sequence[Any]) -> list[str]:
    header = component(components, "HEADER")
    if header is None or header_format(components) != "TEXT":
        return []
    return placeholders(header.get("text"))


def body_variables(components: Sequence[Any]) -> list[str]:
    body = component(components, "BODY")
    return placeholders(body.get("text")) if body else []


def template_buttons(components: Sequence[Any]) -> list[dict]:
    buttons = (component(components, "BUTTONS") or {}).get("buttons")
    return [dict(b) for b in buttons if isinstance(b, Mapping)] if isinstance(buttons, list) else []


def button_variables(components: Sequence[Any]) -> dict[int, list[str]]:
    """``{button index: variables}`` for URL buttons with a variable in their URL."""
    found = {}
    for index, button in enumerate(template_buttons(components)):
        if str(button.get("type", "")).upper() == "URL" and (names := placeholders(button.get("url"))):
            found[index] = names
    return found


def _expected(variables: list[str]) -> str:
    return ", ".join("{{" + v + "}}" for v in variables)


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, Mapping):
        if not value:
            return True
        return value.get("type", "text") == "text" and _empty(value.get("text"))
    return isinstance(value, str) and not value.strip()


def _value_problems(part: str, label: str, value: Any) -> list[str]:
    if _empty(value):
        return [f"{part} parameter {label} is empty"]
    text = value.get("text") if isinstance(value, Mapping) else value
    if isinstance(text, str) and _UNSENDABLE_TEXT.search(text):
        return [f"{part} parameter {label} has a new line, a tab or more than 4 spaces in a row, which Meta refuses"]
    return []


def _check_part(part: str, expected: list[str], given: Any, named: bool) -> list[str]:
    """Problems with the values given for the HEADER (text) or BODY variables."""
    if isinstance(given, (str, bytes)):
        return [f"{part}: parameters are a list (positional) or an object (named), not a string"]
    if not expected:
        return [f"{part}: the template's {part} has no variables; send no {part} parameters"] if given else []
    if named:
        if given is not None and not isinstance(given, Mapping):
            return [f"{part}: this template uses named parameters ({', '.join(expected)}); send them by name, "
                    "not as a list"]
        given = given or {}
        problems = []
        if missing := [v for v in expected if v not in given]:
            problems.append(f"{part}: missing named parameters: {', '.join(missing)}")
        if unknown := [str(k) for k in given if k not in expected]:
            problems.append(f"{part}: unknown named parameters: {', '.join(unknown)} (the template has "
                            f"{', '.join(expected)})")
        for name in expected:
            if name in given:
                problems += _value_problems(part, name, given[name])
        return problems
    if isinstance(given, Mapping):
        return [f"{part}: this template uses positional parameters ({_expected(expected)}); send a list of "
                f"{len(expected)} values, not named ones"]
    values = list(given or [])
    if len(values) != len(expected):
        return [f"{part}: expected {len(expected)} parameters ({_expected(expected)}), got {len(values)}"]
    problems = []
    for variable, value in zip(expected, values):
        problems += _value_problems(part, "{{" + variable + "}}", value)
    return problems


def _check_media_header(fmt: str, header: Any) -> list[str]:
    kind = fmt.lower()
    hint = f'header=[{{"type": "{kind}", "{kind}": {{…}}}}]'
    if not isinstance(header, Sequence) or isinstance(header, (str, bytes)) or len(header) != 1:
        return [f"header: the template has a {fmt} header; send exactly one {kind} parameter: {hint}"]
    param = header[0]
    if not isinstance(param, Mapping) or param.get("type") != kind or not param.get(kind):
        return [f"header: the template has a {fmt} header; its parameter must be {hint}"]
    return []


def _check_buttons(components: Sequence[Any], buttons: Sequence[Mapping[str, Any]]) -> list[str]:
    defined = template_buttons(components)
    variables = button_variables(components)
    problems, seen = [], set()
    for given in buttons or ():
        if not isinstance(given, Mapping):
            problems.append("buttons: each button is an object {sub_type, index, parameters}")
            continue
        try:
            index = int(given.get("index"))
        except (TypeError, ValueError):
            problems.append(f"buttons: index {given.get('index')!r} is not a number")
            continue
        if not 0 <= index < len(defined):
            problems.append(f"button {index}: the template has {len(defined)} buttons"
                            + (f" (index 0 to {len(defined) - 1})" if defined else ""))
            continue
        if index in seen:
            problems.append(f"button {index}: given more than once")
            continue
        seen.add(index)
        kind = str(defined[index].get("type", "")).upper()
        sub_type = str(given.get("sub_type", "")).lower()
        if BUTTON_SUB_TYPES.get(kind, kind.lower()) != sub_type:
            problems.append(f"button {index}: the template's button {index} is a {kind} button; use sub_type "
                            f"{BUTTON_SUB_TYPES.get(kind, kind.lower())!r}, not {sub_type!r}")
            continue
        params = given.get("parameters") or []
        if kind == "URL":
            if index not in variables:
                if params:
                    problems.append(f"button {index}: its URL has no variable; send no parameters for it")
                continue
            if not isinstance(params, Sequence) or isinstance(params, (str, bytes)) or len(params) != 1:
                problems.append(f"button {index}: its URL needs exactly one value for {{{{1}}}}")
                continue
            problems += _value_problems(f"button {index}", "{{1}}", params[0])
        elif kind == "OTP" and (not isinstance(params, Sequence) or len(params) != 1 or _empty(params[0])):
            problems.append(f"button {index}: the one-time-password button needs the code as its one parameter")
    for index in sorted(variables):
        if index not in seen:
            problems.append(f"button {index}: its URL needs a value for {{{{1}}}}; send {{\"sub_type\": \"url\", "
                            f"\"index\": {index}, \"parameters\": [\"…\"]}}")
    for index, button in enumerate(defined):
        if str(button.get("type", "")).upper() == "OTP" and index not in seen:
            problems.append(f"button {index}: the one-time-password button needs the code; send "
                            f"{{\"sub_type\": \"url\", \"index\": {index}, \"parameters\": [\"<code>\"]}}")
    return problems


def validate_send(template, *, body: Any = None, header: Any = None,
                  buttons: Sequence[Mapping[str, Any]] = ()) -> None:
    """Raise :class:`TemplateParameterError` unless the values fit ``template`` (a MessageTemplate) exactly."""
    named = template.parameter_format == "NAMED"
    problems = _check_part("body", list(template.body_variables or []), body, named)
    fmt = header_format(template.components)
    if fmt in MEDIA_FORMATS:
        problems += _check_media_header(fmt, header)
    else:
        problems += _check_part("header", list(template.header_variables or []), header, named)
    problems += _check_buttons(template.components, buttons)
    if problems:
        raise TemplateParameterError(problems)


def build_payload(template, to: str, *, body: Any = None, header: Any = None,
                  buttons: Sequence[Mapping[str, Any]] = (),
                  biz_opaque_callback_data: str | None = None) -> dict[str, Any]:
    """Meta's send body for ``template`` after :func:`validate_send` accepted the values."""
    validate_send(template, body=body, header=header, buttons=buttons)
    return template_payload(to, template.name, template.language, body=body or None, header=header or None,
                            buttons=list(buttons or ()), biz_opaque_callback_data=biz_opaque_callback_data)


@dataclass(frozen=True)
class Resolved:
    """Values for a template's variables: lists for POSITIONAL templates, mappings for NAMED; None when none."""

    header: list | dict | None
    body: list | dict | None


def mapping_keys(template) -> list[str]:
    """The keys a variable mapping may use for ``template``: body variables, then ``header.<variable>``."""
    return list(template.body_variables or []) + [HEADER_KEY_PREFIX + v for v in template.header_variables or []]


def check_mapping(template, mapping: Any) -> list[str]:
    """Problems with a variable mapping for ``template``; empty when it can be stored or used."""
    if not isinstance(mapping, Mapping):
        return ["the variable mapping is an object {variable: {\"field\": …} or {\"value\": …}}"]
    keys = mapping_keys(template)
    problems = []
    for key, spec in mapping.items():
        if key not in keys:
            known = ", ".join(keys) if keys else "none"
            problems.append(f"{key!r} is not a variable of this template (its variables: {known})")
            continue
        problems += [f"{key}: {p}" for p in _spec_problems(spec)]
    return problems


def _spec_problems(spec: Any) -> list[str]:
    if not isinstance(spec, Mapping):
        return ['map to {"field": "name", "default": "…"} or {"value": "…"}']
    keys = set(spec)
    if "value" in keys:
        if keys != {"value"}:
            return ['a literal {"value": …} takes no field or default']
        value = spec["value"]
        return [] if isinstance(value, str) and value.strip() else ["value is non-empty text"]
    if "field" not in keys:
        return ['give "field" (a contact field) or "value" (literal text)']
    if unknown := keys - {"field", "default"}:
        return [f"unknown keys {', '.join(sorted(unknown))}; a field mapping has field and default"]
    problems = []
    field = spec["field"]
    attribute = field.removeprefix(ATTRIBUTE_PREFIX) if isinstance(field, str) else ""
    if not isinstance(field, str) or not (field in CONTACT_FIELDS or (
            field.startswith(ATTRIBUTE_PREFIX) and 0 < len(attribute) <= 64)):
        problems.append(f"field {field!r} is not a contact field: use {', '.join(CONTACT_FIELDS)} or "
                        "attributes.<name>")
    if "default" in spec and not (isinstance(spec["default"], str) and spec["default"].strip()):
        problems.append("default is non-empty text (leave it out to require a value)")
    return problems


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value).strip()
    return text or None


def _contact_value(contact: Mapping[str, Any], field: str) -> str | None:
    if field.startswith(ATTRIBUTE_PREFIX):
        return _text((contact.get("attributes") or {}).get(field.removeprefix(ATTRIBUTE_PREFIX)))
    return _text(contact.get(field))


def resolve_variables(template, mapping: Mapping[str, Any] | None, contact: Mapping[str, Any]) -> Resolved:
    """Fill ``template``'s variables from ``contact`` (decrypted fields: name, mobile, country, attributes).

    ``mapping`` is the send's own; each of its keys overrides the template's stored
    ``variable_mapping``. A variable left without a value (no mapping, or an empty contact
    field and no default) is a :class:`TemplateParameterError` naming it.
    """
    given = dict(mapping or {})
    if problems := check_mapping(template, given):
        raise TemplateParameterError(problems)
    merged = {**(template.variable_mapping or {}), **given}
    problems = []

    def fill(variables: list[str], prefix: str, part: str) -> list | dict | None:
        values = {}
        for variable in variables:
            label = f"{part} variable {{{{{variable}}}}}"
            spec = merged.get(prefix + variable)
            if spec is None:
                problems.append(f"{label} has no mapping; map it to a contact field or a value")
                continue
            if "value" in spec:
                values[variable] = spec["value"]
                continue
            value = _contact_value(contact, spec["field"]) or _text(spec.get("default"))
            if value is None:
                problems.append(f"{label}: the contact has no {spec['field']} and the mapping gives no default")
                continue
            values[variable] = value
        if not variables:
            return None
        if template.parameter_format == "NAMED":
            return values
        return [values.get(v) for v in variables]

    header = fill(list(template.header_variables or []), HEADER_KEY_PREFIX, "header")
    body = fill(list(template.body_variables or []), "", "body")
    if problems:
        raise TemplateParameterError(problems)
    return Resolved(header=header, body=body)
