"""The Cloud API endpoints the sandbox answers: messages, media, templates, numbers, business profile, WABA.

Each handler takes the state and the parsed request and returns ``(http_status, body)``;
the HTTP layer adds latency and authentication around them. Checks run in Meta's order:
the object must exist, the request must be well formed, the template must match, then the
number's throughput and the pair rate limit, then any injected failure. A free-form message
to a user whose customer-service window is closed is still accepted, and fails in its status
webhook with 131047, as Meta does (:mod:`kloyst.sandbox.customers`).
"""

from __future__ import annotations

import base64
import random
import re
import secrets
import time

from kloyst.sandbox.customers import BSUID, Recipient
from kloyst.sandbox.errors import error_response
from kloyst.sandbox.media import UploadError, check_upload, new_media, parse_multipart
from kloyst.sandbox.state import PhoneNumber, SandboxState, Template

RECIPIENT = re.compile(r"^\+?[1-9][0-9]{6,14}$")  # E.164 digits, with or without "+"
TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
SUPPORTED_TYPES = ("text", "template", *MEDIA_TYPES, "location", "contacts", "interactive", "reaction")
INTERACTIVE_TYPES = ("button", "list", "cta_url", "product", "product_list", "catalog_message", "flow",
                     "location_request_message", "address_message", "call_permission_request", "voice_call")


def _missing_object(object_id: str) -> tuple[int, dict]:
    return error_response(100, f"Unsupported post request. Object with ID '{object_id}' does not exist, "
                               "cannot be loaded due to missing permissions, or does not support this operation.",
                          subcode=33)


def missing_get(object_id: str) -> tuple[int, dict]:
    return error_response(100, f"Unsupported get request. Object with ID '{object_id}' does not exist, "
                               "cannot be loaded due to missing permissions, or does not support this operation.",
                          subcode=33)


def new_wamid() -> str:
    return "wamid." + base64.b64encode(b"HBgL" + secrets.token_bytes(24)).decode().rstrip("=")


def send_message(state: SandboxState, phone_number_id: str, body, on_accepted=None,
                 arrived: float | None = None) -> tuple[int, dict]:
    """POST /{phone-number-id}/messages; every refusal is counted by its code.

    ``arrived`` (monotonic) is when the request was read: throughput is judged on arrival, as Meta does.
    A body with ``"status": "read"`` marks an inbound message read (and may show a typing indicator).
    """
    if isinstance(body, dict) and "status" in body and "type" not in body:
        status, result = mark_read(state, phone_number_id, body)
    else:
        status, result = _send(state, phone_number_id, body, on_accepted, arrived)
    if status != 200:
        with state.lock:
            state.errors[result["error"]["code"]] += 1
    return status, result


def mark_read(state: SandboxState, phone_number_id: str, body: dict) -> tuple[int, dict]:
    """Mark an inbound message read: Meta answers ``{"success": true}`` (it also marks earlier ones read)."""
    if state.numbers.get(phone_number_id) is None:
        return _missing_object(phone_number_id)
    if body.get("messaging_product") != "whatsapp":
        return error_response(100, "The parameter messaging_product is required and must be 'whatsapp'.")
    if body.get("status") != "read":
        return error_response(100, f"Invalid parameter: status must be 'read', not {body.get('status')!r}.")
    message_id = body.get("message_id")
    if not message_id:
        return error_response(131008, "The parameter message_id is required.")
    if not isinstance(message_id, str) or not message_id.startswith("wamid."):
        return error_response(100, f"Invalid parameter: message_id {message_id!r} is not a WhatsApp message id.")
    indicator = body.get("typing_indicator")
    if indicator is not None and (not isinstance(indicator, dict) or indicator.get("type") != "text"):
        return error_response(100, "Invalid parameter: typing_indicator must be {\"type\": \"text\"}.")
    with state.lock:
        state.reads.append({"phone_number_id": phone_number_id, "message_id": message_id, "at": time.time(),
                            "typing_indicator": indicator is not None})
    return 200, {"success": True}


def _check_content(kind: str, body: dict) -> tuple | None:
    """Meta's first checks on a free-form message's content; None when it is well formed."""
    content = body.get(kind)
    if kind == "text":
        if not isinstance(content, dict) or not isinstance(content.get("body"), str) or not content["body"]:
            return error_response(131008, "The parameter text['body'] is required.")
        if len(content["body"]) > 4096:
            return error_response(100, "Invalid parameter: text['body'] may be at most 4096 characters.")
        return None
    if not isinstance(content, dict):
        return error_response(131008, f"The parameter {kind} is required and must be an object.")
    if kind in MEDIA_TYPES:
        if not content.get("id") and not content.get("link"):
            return error_response(131008, f"The parameter {kind}['id'] or {kind}['link'] is required.")
        link = content.get("link")
        if link is not None and (not isinstance(link, str) or not link.startswith(("http://", "https://"))):
            return error_response(131009, f"Parameter value is not valid: {kind}['link'] must be an http(s) URL.")
    elif kind == "location":
        for key in ("latitude", "longitude"):
            try:
                float(content.get(key))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return error_response(131008, f"The parameter location['{key}'] is required and must be a number.")
    elif kind == "contacts":
        return None  # validated as a list below
    elif kind == "interactive":
        if content.get("type") not in INTERACTIVE_TYPES:
            return error_response(100, f"Invalid parameter: interactive['type'] must be one of "
                                       f"{', '.join(INTERACTIVE_TYPES)}.")
        if "action" not in content:
            return error_response(131008, "The parameter interactive['action'] is required.")
    elif kind == "reaction" and not (isinstance(content.get("message_id"), str)
                                     and isinstance(content.get("emoji"), str)):
        return error_response(131008, "The parameters reaction['message_id'] and reaction['emoji'] are required.")
    return None


def _media_known(state: SandboxState, kind: str, body: dict) -> tuple | None:
    media_id = body[kind].get("id") if kind in MEDIA_TYPES else None
    if media_id is None:
        return None
    with state.lock:
        found = state.media.get(str(media_id), time.time(), state.behaviour.media_ttl_seconds)
    if found is None:
        return error_response(131009, f"Parameter value is not valid: media id {media_id} does not exist "
                                      "or has expired.")
    return None


def _send(state: SandboxState, phone_number_id: str, body, on_accepted, arrived: float | None = None
          ) -> tuple[int, dict]:
    number = state.numbers.get(phone_number_id)
    if number is None:
        return _missing_object(phone_number_id)
    if not isinstance(body, dict):
        return error_response(100, "The request body must be a JSON object.")
    if body.get("messaging_product") != "whatsapp":
        return error_response(100, "The parameter messaging_product is required and must be 'whatsapp'.")
    to, bsuid = body.get("to"), body.get("recipient")
    if not to and not bsuid:
        return error_response(131008, "The parameter to (a phone number) or recipient (a business-scoped user ID) "
                                      "is required.")
    if to:  # "to" wins when both are given (Meta's BSUID page)
        if not isinstance(to, str) or not RECIPIENT.match(to):
            return error_response(100, f"Invalid parameter: to {to!r} is not a valid WhatsApp phone number.")
    elif not isinstance(bsuid, str) or not BSUID.match(bsuid):
        return error_response(100, f"Invalid parameter: recipient {bsuid!r} is not a business-scoped user ID "
                                   "(a country code, a period and up to 128 letters and digits, "
                                   "e.g. US.13491208655302741918).")
    kind = body.get("type", "text")
    if kind not in SUPPORTED_TYPES:
        return error_response(100, f"The sandbox supports message types {', '.join(SUPPORTED_TYPES)}, not {kind!r}.")
    template = None
    if kind == "template":
        template, problem = _check_template(state, number.waba_id, body.get("template"))
        if problem:
            return problem
        if not to and template is not None and template.category == "AUTHENTICATION":
            return error_response(131062, "Business-scoped user ID (BSUID) recipients are not supported for "
                                          "authentication templates; send them to the phone number.")
    else:
        problem = _check_content(kind, body)
        if problem is None and kind == "contacts" and (not isinstance(body["contacts"], list) or not body["contacts"]):
            problem = error_response(131008, "The parameter contacts must be a non-empty list.")
        if problem is None:
            problem = _media_known(state, kind, body)
        if problem:
            return problem
    wa_id = to.lstrip("+") if to else None
    opaque = body.get("biz_opaque_callback_data")
    now = time.time()
    with state.lock:
        recipient: Recipient = state.customers.recipient(wa_id, bsuid)
        limit_key = wa_id or recipient.user_id
        code: int | None
        if limit_key in state.undeliverable or recipient.user_id in state.undeliverable:
            code = 131026
        else:
            code = state.admit(number, limit_key, arrived)
        if code is None:
            code = _injected_failure(state.behaviour.failure_rates)
        in_window = state.customers.window_open(number.id, recipient.user_id, now, state.behaviour.window_seconds)
        failure = 131047 if kind != "template" and not in_window and state.behaviour.enforce_window else None
        if code is None:
            wamid = new_wamid()
            state.record(number, limit_key, wamid, kind, template.name if template else None, opaque=opaque,
                         user_id=recipient.user_id, outcome=str(failure) if failure else "accepted")
    if code is not None:
        return error_response(code, _DETAILS.get(code, ""))
    if on_accepted is not None:
        on_accepted(number, recipient, wamid, message_pricing(template, in_window), opaque, failure)
    message = {"id": wamid}
    if template is not None:
        message["message_status"] = "accepted"
    contact = {"input": to, "wa_id": wa_id} if to else {"input": bsuid, "user_id": recipient.user_id}
    return 200, {"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]}


def message_pricing(template: Template | None, in_window: bool) -> dict:
    """The ``pricing`` of the message's status webhooks under per-message pricing (PMP).

    Free-form messages are service messages, free; a utility template delivered inside an open
    window is free too (since 2025-07-01); every other template is charged.
    """
    if template is None:
        return {"billable": False, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"}
    category = PRICING_CATEGORY.get(template.category, "utility")
    if category == "utility" and in_window:
        return {"billable": False, "pricing_model": "PMP", "category": category, "type": "free_customer_service"}
    return {"billable": True, "pricing_model": "PMP", "category": category, "type": "regular"}


PRICING_CATEGORY = {"MARKETING": "marketing", "UTILITY": "utility", "AUTHENTICATION": "authentication"}


_DETAILS = {
    131047: "Message failed to send because more than 24 hours have passed since the customer last replied "
            "to this number.",
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


TEMPLATE_FIELDS = ("id", "name", "language", "status", "category", "components", "parameter_format",
                   "message_send_ttl_seconds", "correct_category", "previous_category", "rejected_reason",
                   "library_template_name", "quality_score", "cta_url_link_tracking_opted_out", "sub_category",
                   "degrees_of_freedom_spec")
TEMPLATE_SUMMARY = ("total_count", "message_template_count", "message_template_limit", "are_translations_complete")
TEMPLATE_LIMIT = 250  # an unverified business's template allowance


def _requested(query: dict, known, node: str) -> tuple[list[str] | None, tuple | None]:
    """The ``fields`` a Graph GET asks for (None: the defaults), or Meta's error for a field the node lacks."""
    if not query.get("fields"):
        return None, None
    fields = [f.strip() for f in query["fields"].split(",") if f.strip()]
    for name in fields:
        if name not in known:
            return None, error_response(100, f"Tried accessing nonexisting field ({name}) on node type ({node})")
    return fields, None


def _pick(values: dict, fields: list[str], always: tuple[str, ...] = ("id",)) -> dict:
    """The fields asked for, plus ``always``; a field with no value is left out, as Graph leaves it out."""
    wanted = [*always, *(f for f in fields if f not in always)]
    return {f: values[f] for f in wanted if values.get(f) is not None}


def _matches(value: str, wanted: str | None) -> bool:
    return wanted is None or value.upper() in {w.strip().upper() for w in wanted.split(",")}


def list_templates(state: SandboxState, waba_id: str, query: dict, base_url: str) -> tuple[int, dict]:
    """GET /{waba-id}/message_templates with Meta's filters (``name`` and ``content`` match a part,
    ``name_or_content`` either; ``status``, ``category``, ``language`` and ``quality_score`` take
    comma-separated values), ``fields`` and ``summary`` (counts over every template matched)."""
    if waba_id not in state.templates:
        return _missing_object(waba_id)
    fields, problem = _requested(query, TEMPLATE_FIELDS, "WhatsAppMessageTemplate")
    if problem:
        return problem
    summary = [s.strip() for s in query.get("summary", "").split(",") if s.strip()]
    for name in summary:
        if name not in TEMPLATE_SUMMARY:
            return error_response(100, f"summary must be a comma-separated list of {', '.join(TEMPLATE_SUMMARY)}, "
                                       f"not {name!r}")
    name, content = query.get("name", "").lower(), query.get("content", "").lower()
    either = query.get("name_or_content", "").lower()
    selected = [t for t in list(state.templates[waba_id])
                if name in t.name.lower() and content in t.body_text().lower()
                and (either in t.name.lower() or either in t.body_text().lower())
                and _matches(t.status, query.get("status")) and _matches(t.category, query.get("category"))
                and _matches(t.language, query.get("language")) and _matches("UNKNOWN", query.get("quality_score"))]
    templates = [_template_json(template, fields) for template in selected]
    status, page = _paged(templates, query, base_url)
    if status == 200 and summary:
        everything = {"total_count": len(templates), "message_template_count": len(state.templates[waba_id]),
                      "message_template_limit": TEMPLATE_LIMIT, "are_translations_complete": True}
        page["summary"] = {key: everything[key] for key in summary}
    return status, page


def get_template(state: SandboxState, template_id: str, query: dict) -> tuple[int, dict] | None:
    """GET /{template-id}: one template, with ``fields`` as in the listing; None when no template has that id."""
    template = next((t for templates in list(state.templates.values()) for t in list(templates)
                     if t.id == template_id), None)
    if template is None:
        return None
    fields, problem = _requested(query, TEMPLATE_FIELDS, "WhatsAppMessageTemplate")
    if problem:
        return problem
    return 200, _template_json(template, fields)


def _template_json(template: Template, fields: list[str] | None) -> dict:
    if fields is None:
        return template.as_json()
    values = {**template.as_json(), "quality_score": {"score": "UNKNOWN", "date": int(time.time())},
              "sub_category": None, "previous_category": None,
              "rejected_reason": "NONE" if template.status == "REJECTED" else None}
    return _pick(values, fields)


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


PHONE_NUMBER_FIELDS = tuple(PhoneNumber(id="", waba_id="", display_phone_number="").all_fields())


def get_phone_number(state: SandboxState, number: PhoneNumber, query: dict) -> tuple[int, dict]:
    """GET /{phone-number-id}: Meta's default fields, or those ``fields`` names."""
    fields, problem = _requested(query, PHONE_NUMBER_FIELDS, "WhatsAppBusinessPhoneNumber")
    if problem:
        return problem
    default = ["display_phone_number", "verified_name", "quality_rating", "code_verification_status"]
    return 200, _pick(number.all_fields(), fields if fields is not None else default)


PROFILE_FIELDS = ("about", "address", "description", "email", "profile_picture_url", "websites", "vertical",
                  "messaging_product")
VERTICALS = ("OTHER", "AUTO", "BEAUTY", "APPAREL", "EDU", "ENTERTAIN", "EVENT_PLAN", "FINANCE", "GROCERY", "GOVT",
             "HOTEL", "HEALTH", "NONPROFIT", "PROF_SERVICES", "RETAIL", "TRAVEL", "RESTAURANT", "ALCOHOL",
             "ONLINE_GAMBLING", "PHYSICAL_GAMBLING", "OTC_DRUGS")


def get_business_profile(state: SandboxState, number: PhoneNumber, query: dict) -> tuple[int, dict]:
    """GET /{phone-number-id}/whatsapp_business_profile → ``{"data": [profile]}``."""
    fields, problem = _requested(query, PROFILE_FIELDS, "WhatsAppBusinessProfile")
    if problem:
        return problem
    values = {**number.profile, "messaging_product": "whatsapp"}
    picked = _pick(values, fields, always=("messaging_product",)) if fields is not None else values
    return 200, {"data": [picked]}


def update_business_profile(state: SandboxState, number: PhoneNumber, body) -> tuple[int, dict]:
    """POST /{phone-number-id}/whatsapp_business_profile → ``{"success": true}``."""
    if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
        return error_response(100, "The parameter messaging_product is required and must be 'whatsapp'.")
    changes = {key: value for key, value in body.items() if key != "messaging_product"}
    for key, value in changes.items():
        if key not in PROFILE_FIELDS or key == "profile_picture_url":
            return error_response(100, f"Invalid parameter: {key} is not a business profile field.")
        if key == "vertical" and value not in VERTICALS:
            return error_response(100, f"Invalid parameter: vertical must be one of {', '.join(VERTICALS)}.")
        if key == "websites" and not (isinstance(value, list) and len(value) <= 2
                                      and all(isinstance(w, str) for w in value)):
            return error_response(100, "Invalid parameter: websites must be a list of at most 2 URLs.")
        if key != "websites" and not isinstance(value, str):
            return error_response(100, f"Invalid parameter: {key} must be a string.")
    with state.lock:
        number.profile.update(changes)
    return 200, {"success": True}


WABA_FIELDS = ("id", "name", "timezone_id", "message_template_namespace", "status", "business_verification_status",
               "is_enabled_for_insights", "marketing_messages_lite_api_status",
               "marketing_messages_onboarding_status", "on_behalf_of_business_info", "ownership_type",
               "health_status", "currency", "country", "subscribed_apps", "owner_business_info",
               "account_review_status", "disable_marketing_messages_on_cloud_api", "purchase_order_number",
               "audiences", "schedules", "dcc_config", "primary_business_location")


def get_waba(state: SandboxState, waba_id: str, query: dict) -> tuple[int, dict]:
    """GET /{waba-id}: Meta's default fields (id, name, timezone, template namespace), or those ``fields`` names."""
    fields, problem = _requested(query, WABA_FIELDS, "WhatsAppBusinessAccount")
    if problem:
        return problem
    values = {"id": waba_id, "name": f"Kloyst Sandbox {waba_id}", "timezone_id": "1",
              "message_template_namespace": f"sandbox_{waba_id}", "status": "ACTIVE",
              "business_verification_status": "VERIFIED", "is_enabled_for_insights": True,
              "ownership_type": "CLIENT_OWNED", "currency": "USD", "country": "US",
              "account_review_status": "APPROVED", "marketing_messages_lite_api_status": "INELIGIBLE",
              "disable_marketing_messages_on_cloud_api": False}
    return 200, _pick(values, fields if fields is not None else ["name", "timezone_id", "message_template_namespace"])


def upload_media(state: SandboxState, number: PhoneNumber, content_type: str, raw: bytes) -> tuple[int, dict]:
    """POST /{phone-number-id}/media (multipart/form-data): store the file, answer its media id."""
    try:
        if not content_type.lower().startswith("multipart/form-data"):
            raise UploadError(100, "Upload media as multipart/form-data with the parts file, type and "
                                   "messaging_product.")
        mime_type, filename, data = check_upload(*parse_multipart(content_type, raw))
    except UploadError as exc:
        with state.lock:
            state.errors[exc.code] += 1
        return error_response(exc.code, exc.details)
    media = new_media(state.new_id(), data, mime_type, filename)
    with state.lock:
        state.media.add(media, state.behaviour.media_ttl_seconds)
    return 200, {"id": media.id}


def media_info(state: SandboxState, media_id: str, base_url: str) -> tuple[int, dict] | None:
    """GET /{media-id}: its short-lived URL, type, hash and size; None when no such media lives."""
    now = time.time()
    with state.lock:
        media = state.media.get(media_id, now, state.behaviour.media_ttl_seconds)
        if media is None:
            return None
        url = state.media.url(base_url, media, int(now + state.behaviour.media_url_ttl_seconds))
    return 200, {"messaging_product": "whatsapp", "url": url, "mime_type": media.mime_type,
                 "sha256": media.sha256_hex, "file_size": str(len(media.data)), "id": media.id}
