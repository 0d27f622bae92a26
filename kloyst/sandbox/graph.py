"""The Cloud API endpoints the sandbox answers: send message, list/create templates, list phone numbers.

Each handler takes the state and the parsed request and returns ``(http_status, body)``;
the HTTP layer adds latency and authentication around them. Checks run in Meta's order:
the object must exist, the request must be well formed, the template must match, then the
number's throughput and the pair rate limit, then any injected failure.
"""

from __future__ import annotations

import base64
import random
import re
import secrets

from kloyst.sandbox.errors import error_response
from kloyst.sandbox.state import SandboxState, Template

RECIPIENT = re.compile(r"^\+?[1-9][0-9]{6,14}$")  # E.164 digits, with or without "+"
TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
SUPPORTED_TYPES = ("text", "template")


def _missing_object(object_id: str) -> tuple[int, dict]:
    return error_response(100, f"Unsupported post request. Object with ID '{object_id}' does not exist, "
                               "cannot be loaded due to missing permissions, or does not support this operation.",
                          subcode=33)


def new_wamid() -> str:
    return "wamid." + base64.b64encode(b"HBgL" + secrets.token_bytes(24)).decode().rstrip("=")


def send_message(state: SandboxState, phone_number_id: str, body, on_accepted=None,
                 arrived: float | None = None) -> tuple[int, dict]:
    """POST /{phone-number-id}/messages; every refusal is counted by its code.

    ``arrived`` (monotonic) is when the request was read: throughput is judged on arrival, as Meta does.
    """
    status, result = _send(state, phone_number_id, body, on_accepted, arrived)
    if status != 200:
        with state.lock:
            state.errors[result["error"]["code"]] += 1
    return status, result


def _send(state: SandboxState, phone_number_id: str, body, on_accepted, arrived: float | None = None
          ) -> tuple[int, dict]:
    number = state.numbers.get(phone_number_id)
    if number is None:
        return _missing_object(phone_number_id)
    if not isinstance(body, dict):
        return error_response(100, "The request body must be a JSON object.")
    if body.get("messaging_product") != "whatsapp":
        return error_response(100, "The parameter messaging_product is required and must be 'whatsapp'.")
    to = body.get("to")
    if not to:
        return error_response(131008, "The parameter to is required.")
    if not isinstance(to, str) or not RECIPIENT.match(to):
        return error_response(100, f"Invalid parameter: to {to!r} is not a valid WhatsApp phone number.")
    kind = body.get("type", "text")
    if kind not in SUPPORTED_TYPES:
        return error_response(100, f"The sandbox supports message types {', '.join(SUPPORTED_TYPES)}, not {kind!r}.")
    template = None
    if kind == "text":
        text = body.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]:
            return error_response(131008, "The parameter text['body'] is required.")
    else:
        template, problem = _check_template(state, number.waba_id, body.get("template"))
        if problem:
            return problem
    wa_id = to.lstrip("+")
    opaque = body.get("biz_opaque_callback_data")
    with state.lock:
        code: int | None
        if wa_id in state.undeliverable:
            code = 131026
        else:
            code = state.admit(number, wa_id, arrived)
        if code is None:
            code = _injected_failure(state.behaviour.failure_rates)
        if code is None:
            wamid = new_wamid()
            state.record(number, wa_id, wamid, kind, template.name if template else None, opaque=opaque)
    if code is not None:
        return error_response(code, _DETAILS.get(code, ""))
    if on_accepted is not None:
        on_accepted(number, wa_id, wamid, template, opaque)
    message = {"id": wamid}
    if template is not None:
        message["message_status"] = "accepted"
    return 200, {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": wa_id}],
                 "messages": [message]}


_DETAILS = {
    130429: "Cloud API message throughput has been reached.",
    131056: "Too many messages sent from this phone number to the same phone number in a short period of time.",
    131026: "Message undeliverable: the recipient is not a WhatsApp user or cannot receive this message.",
}


def _injected_failure(rates: dict[int, float]) -> int | None:
    roll = random.random()
    for code, rate in rates.items():
        if roll < rate:
            return code
        roll -= rate
    return None


def _check_template(state: SandboxState, waba_id: str, spec) -> tuple[Template | None, tuple | None]:
    if not isinstance(spec, dict) or not spec.get("name"):
        return None, error_response(131008, "The parameter template['name'] is required.")
    language = spec.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not code:
        return None, error_response(131008, "The parameter template['language']['code'] is required.")
    template = state.find_template(waba_id, spec["name"], code)
    if template is None or template.status not in ("APPROVED", "PAUSED", "DISABLED"):
        return None, error_response(132001, f"template name ({spec['name']}) does not exist in {code}")
    if template.status == "PAUSED":
        return None, error_response(132015, f"Template {template.name} is paused due to low quality.")
    if template.status == "DISABLED":
        return None, error_response(132016, f"Template {template.name} is disabled.")
    components = spec.get("components") or []
    if not isinstance(components, list) or not all(
            isinstance(c, dict) and isinstance(c.get("parameters", []), list) for c in components):
        return None, error_response(100, "template['components'] must be a list of objects with parameter lists.")
    for part in ("HEADER", "BODY"):
        expected = template.placeholders(part)
        sent = [p for c in components if str(c.get("type", "")).upper() == part for p in c.get("parameters", [])]
        if len(sent) != len(expected):
            return None, error_response(132000, f"{part.lower()}: number of localizable_params ({len(sent)}) "
                                                f"does not match the expected number of params ({len(expected)})")
        if template.parameter_format == "NAMED":
            names = [p.get("parameter_name") for p in sent if isinstance(p, dict)]
            if sorted(map(str, names)) != sorted(expected):
                return None, error_response(132000, f"{part.lower()}: parameter names {names} do not match "
                                                    f"the template's {expected}")
    return template, None


def _page(items: list, query: dict, base_url: str) -> dict:
    """Graph cursor paging: opaque ``before``/``after`` cursors, ``next``/``previous`` links."""
    try:
        limit = max(1, min(int(query.get("limit", 25)), 1000))
        if "after" in query:
            start = _decode_cursor(query["after"]) + 1
        elif "before" in query:
            start = max(0, _decode_cursor(query["before"]) - limit)
        else:
            start = 0
    except ValueError:
        return {"_error": error_response(100, "Invalid paging parameters.")}
    chunk = items[start:start + limit]
    result: dict = {"data": chunk}
    if chunk:
        before, after = _encode_cursor(start), _encode_cursor(start + len(chunk) - 1)
        result["paging"] = {"cursors": {"before": before, "after": after}}
        if start + len(chunk) < len(items):
            result["paging"]["next"] = f"{base_url}?limit={limit}&after={after}"
        if start > 0:
            result["paging"]["previous"] = f"{base_url}?limit={limit}&before={before}"
    else:
        result["paging"] = {"cursors": {}}
    return result


def _encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"sandbox:{index}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(cursor) from exc
    if not text.startswith("sandbox:"):
        raise ValueError(cursor)
    return int(text.removeprefix("sandbox:"))


def _paged(items: list, query: dict, base_url: str) -> tuple[int, dict]:
    page = _page(items, query, base_url)
    return page.pop("_error") if "_error" in page else (200, page)


def list_templates(state: SandboxState, waba_id: str, query: dict, base_url: str) -> tuple[int, dict]:
    if waba_id not in state.templates:
        return _missing_object(waba_id)
    templates = [t.as_json() for t in list(state.templates[waba_id])
                 if "name" not in query or query["name"] in t.name]
    return _paged(templates, query, base_url)


def create_template(state: SandboxState, waba_id: str, body) -> tuple[int, dict]:
    if waba_id not in state.templates:
        return _missing_object(waba_id)
    if not isinstance(body, dict):
        return error_response(100, "The request body must be a JSON object.")
    name, category, language = body.get("name"), body.get("category"), body.get("language")
    components, parameter_format = body.get("components"), body.get("parameter_format", "POSITIONAL")
    for key, value in (("name", name), ("category", category), ("language", language), ("components", components)):
        if not value:
            return error_response(100, f"The parameter {key} is required.")
    if not isinstance(name, str) or not TEMPLATE_NAME.match(name):
        return error_response(100, "name may contain only lowercase letters, digits and underscores.")
    if not isinstance(language, str):
        return error_response(100, "language must be a string.")
    if category not in CATEGORIES:
        return error_response(100, f"category must be one of {', '.join(CATEGORIES)}.")
    if parameter_format not in ("POSITIONAL", "NAMED"):
        return error_response(100, "parameter_format must be POSITIONAL or NAMED.")
    if not isinstance(components, list) or not any(
            isinstance(c, dict) and str(c.get("type", "")).upper() == "BODY" for c in components):
        return error_response(100, "components must be a list with a BODY component.")
    if state.find_template(waba_id, name, language):
        return error_response(100, f"Content in this language already exists for template {name}.",
                              subcode=2388024)
    template = Template(id=state.new_id(), name=name, language=language, category=category,
                        components=components, status=state.behaviour.new_template_status,
                        parameter_format=parameter_format)
    state.add_template(waba_id, template)
    return 200, {"id": template.id, "status": template.status, "category": template.category}


def list_phone_numbers(state: SandboxState, waba_id: str, query: dict, base_url: str) -> tuple[int, dict]:
    if waba_id not in state.templates:
        return _missing_object(waba_id)
    numbers = [n.as_json() for n in list(state.numbers.values()) if n.waba_id == waba_id]
    return _paged(numbers, query, base_url)
