"""Request bodies and query strings validated by pydantic models: a bad request is a 422 that says what to fix.

A view declares its schemas where it is registered, as ``add_view`` options::

    config.add_view(create_contact, route_name="contacts.collection", request_method="POST",
                    renderer="json", body_schema=ContactCreate, response_schema=ContactAnswer, status=201)

and reads them with ``request.validated()`` / ``request.validated_query()``. The declaration
is the one source: the same classes validate the request and describe the operation in the
OpenAPI document (:mod:`kloyst.http.openapi`), so the two cannot drift. A view that reads a
body it never declared is a programming error, raised on its first request.
``response_schema`` describes the success answer in the document; it is not checked per
request (that would cost every answer a second serialisation), the tests check real answers
against it instead.

pydantic gives precise, per-field messages and JSON Schema from the same class, which
hand-written checks cannot.

No request may make the server do more than linear work in its size (issue 15: a quadratic
label de-duplication held a request thread for 23 s). So sizes are checked before anything
loops over them: the body's JSON nesting (:data:`MAX_JSON_DEPTH`), the number of query
parameters (:data:`MAX_QUERY_PARAMETERS`), and in every schema a ``max_length`` on each list,
mapping and string, which pydantic checks before it validates the items.

Text a person types (names, notes) is :data:`PlainText` or :data:`MultilineText`: no C0 or C1
control character, so a name can never break the mail header or the CSV row it ends up in.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import typing
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn, TypeVar

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo,
                      WithJsonSchema)
from pydantic_core import ErrorDetails

from kloyst.errors import BadRequest, Unprocessable, UnsupportedMediaType
from kloyst.money import MAX_AMOUNT_TEXT, MoneyError, to_micros

T = TypeVar("T", bound=BaseModel)

# Deeper than any body the API takes (a template's components nest six levels), shallow enough
# that no walk over a body can exhaust the stack.
MAX_JSON_DEPTH = 32
# The longest query any list takes is a 50-label filter; more parameters than this are not a real client.
MAX_QUERY_PARAMETERS = 100
# A 422 lists at most this many fields: a 10,000-item list of wrong values is one mistake, not a 1 MB answer.
MAX_REPORTED_FIELDS = 50

# The add_view options a view declares its contract with (see ApiContract).
CONTRACT_OPTIONS = ("body_schema", "query_schema", "response_schema", "status", "openapi")


class Schema(BaseModel):
    """Base for request schemas: unknown fields are refused, so a client can never set what it should not."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Answer(BaseModel):
    """Base for response schemas (``response_schema=``): what a success answer holds, field by field.

    Closed (``additionalProperties: false`` in the document), so an answer that grows a field
    the model does not list fails the tests that hold real answers to the document, rather
    than reaching clients undocumented.
    """

    model_config = ConfigDict(extra="forbid")


# C0 controls, DEL and the C1 controls. Tab, line feed and carriage return are the only ones multi-line text keeps.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINE_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _control_character(pattern: re.Pattern, value: str, allowed: str) -> str:
    if (found := pattern.search(value)) is not None:
        raise ValueError(f"contains the control character U+{ord(found.group()):04X}; {allowed}")
    return value


def single_line(value: str) -> str:
    """``value`` unless it holds a control character (C0, DEL, C1), line breaks and tabs included."""
    return _control_character(_CONTROL, value, "use printable characters on one line")


def multi_line(value: str) -> str:
    """``value`` unless it holds a control character other than tab, line feed and carriage return."""
    return _control_character(_CONTROL_BUT_LINE_BREAKS, value,
                              "use printable characters (new lines and tabs are allowed)")


# Names, labels, titles: text shown on one line, in mail headers, CSV cells and PDFs. Give it a max_length.
PlainText = Annotated[str, AfterValidator(single_line),
                      Field(json_schema_extra={"pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})]
# Notes: free text a person may break into lines; still no other control character.
MultilineText = Annotated[str, AfterValidator(multi_line),
                          Field(json_schema_extra={"pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f"
                                                              "\\u007f-\\u009f]*$"})]

# Amounts of money in answers: decimal strings with six places, never floats (kloyst.money.format_micros).
Amount = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{6}$", examples=["12.500000"],
                              description="An amount of the currency, as a decimal string with six places.")]

# The same amounts in requests: decimal strings (up to six places, at most MAX_AMOUNT_TEXT) read into
# integer micro-units by kloyst.money.to_micros, so a float, a seventh decimal or an amount above the
# maximum is a 422 naming the field. The document declares the string the API reads, with its bounds.
_AMOUNT_DESCRIPTION = (f"An amount of the currency as a decimal string, at most six decimal places and at most "
                       f"{MAX_AMOUNT_TEXT}.")


_AMOUNT_TEXT = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
_SIGNED_AMOUNT_TEXT = r"^-?[0-9]{1,12}(\.[0-9]{1,6})?$"
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _micros_of_text(value, pattern: str, field: str, allow_negative: bool) -> int:
    """The request's amount exactly as the document declares it: a decimal string (no number, no exponent, no
    space), read by :func:`kloyst.money.to_micros`, whose errors say what is wrong (too large, too many decimals)."""
    if not isinstance(value, str):
        raise MoneyError(f"{field}: send amounts as decimal strings such as \"12.50\"")
    if len(value) > 40 or not _DECIMAL_TEXT.fullmatch(value):
        raise MoneyError(f"{field}: {value[:40]!r} is not a decimal amount such as \"12.50\"")
    micros = to_micros(value, field=field, allow_negative=allow_negative)
    if not re.fullmatch(pattern, value):  # what is left: leading zeros beyond twelve digits
        raise MoneyError(f"{field}: at most 12 digits before the point")
    return micros


def _amount_micros(value, info: ValidationInfo) -> int:
    return _micros_of_text(value, _AMOUNT_TEXT, info.field_name or "amount", allow_negative=False)


def _signed_amount_micros(value, info: ValidationInfo) -> int:
    return _micros_of_text(value, _SIGNED_AMOUNT_TEXT, info.field_name or "amount", allow_negative=True)


AmountIn = Annotated[int, BeforeValidator(_amount_micros), WithJsonSchema({
    "type": "string", "pattern": _AMOUNT_TEXT, "maxLength": 19, "examples": ["12.50"],
    "x-maximum": MAX_AMOUNT_TEXT, "description": _AMOUNT_DESCRIPTION})]
SignedAmountIn = Annotated[int, BeforeValidator(_signed_amount_micros), WithJsonSchema({
    "type": "string", "pattern": _SIGNED_AMOUNT_TEXT, "maxLength": 20, "examples": ["-2.50"],
    "x-maximum": MAX_AMOUNT_TEXT, "description": _AMOUNT_DESCRIPTION + " Negative amounts are allowed here."})]


@dataclass(frozen=True)
class ApiContract:
    """What a view takes and answers, from its ``add_view`` options.

    ``body_schema``: the JSON body's pydantic model. ``query_schema``: the query string's.
    ``response_schema``: the model of the JSON the view answers with on success (documented,
    not enforced on each request: the tests hold real answers to it). ``status``: the success
    status (200 unless said). ``openapi``: a fragment merged into the operation for what a
    model cannot say (a multipart body, a CSV or PDF answer).
    """

    body_schema: type[BaseModel] | None = None
    query_schema: type[BaseModel] | None = None
    response_schema: type[BaseModel] | None = None
    status: int = 200
    openapi: dict[str, Any] = field(default_factory=dict)
    json: bool = False  # answers through the JSON renderer

    @classmethod
    def from_options(cls, options) -> ApiContract:
        renderer = options.get("renderer")
        return cls(body_schema=options.get("body_schema"), query_schema=options.get("query_schema"),
                   response_schema=options.get("response_schema"),
                   status=int(options.get("status") or 200), openapi=dict(options.get("openapi") or {}),
                   json=getattr(renderer, "name", renderer) == "json")


def contract_key(route_name: str | None, view, request_methods) -> tuple:
    """How a view's contract is found again from its introspectable (see :func:`declared_contracts`)."""
    if isinstance(request_methods, str):
        request_methods = (request_methods,)
    return route_name, view, frozenset(m for m in request_methods or () if m != "HEAD")  # Pyramid adds HEAD to GET


def declared_contracts(registry) -> dict[tuple, ApiContract]:
    """Every view's contract, keyed by :func:`contract_key` (the OpenAPI document reads them)."""
    return registry.setdefault("kloyst.api_contracts", {})


# pydantic words a validator's own exception as "Value error, <its text>": the prefix is the library's
# bookkeeping, not something the client can act on, so the problem is the validator's text alone.
_RAISED_BY_VALIDATORS = ("value_error", "assertion_error")


def problem_text(error: ErrorDetails | dict) -> str:
    """What is wrong with one field, as a person reads it (see :data:`_RAISED_BY_VALIDATORS`)."""
    raised = (error.get("ctx") or {}).get("error")
    if error.get("type") in _RAISED_BY_VALIDATORS and raised is not None and str(raised):
        return str(raised)
    return error["msg"]


def validation_details(exc: ValidationError) -> list[dict]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": problem_text(err)}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def iso_timestamp(value) -> dt.datetime:
    """An ISO 8601 timestamp (``2026-01-31T09:30:00Z``; UTC when it names no zone) as an aware datetime.

    For query strings, where pydantic would read a bare number as seconds since 1970 and
    ``created_from=0`` would silently mean 1970-01-01: only ISO 8601 text (or a datetime) is a time.
    """
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("expected an ISO 8601 timestamp such as 2026-01-31T00:00:00Z") from None
    else:
        raise ValueError(f"expected an ISO 8601 timestamp such as 2026-01-31T00:00:00Z, not {type(value).__name__}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def nul_characters(data, path: str = "") -> list[dict]:
    """Fields whose text holds a NUL character (``\\u0000``): PostgreSQL cannot store one in any text column."""
    if isinstance(data, str):
        return [{"field": path or "(body)", "problem": "contains a NUL character (\\u0000), which is not allowed"}] \
            if "\x00" in data else []
    if isinstance(data, dict):
        return [d for key, value in data.items() for d in nul_characters(value, f"{path}.{key}" if path else str(key))]
    if isinstance(data, list):
        return [d for index, value in enumerate(data) for d in nul_characters(value, f"{path}.{index}")]
    return []


def _refuse(details: list[dict]) -> NoReturn:
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
    raise Unprocessable(f"the request is invalid: {summary}", fields=details[:MAX_REPORTED_FIELDS])


def parse(schema: type[T], data, *, json_types: bool = False) -> T:
    """``data`` as ``schema``, or a 422 naming every field that is wrong and why.

    ``json_types`` (request bodies): the value must already have its JSON type, so ``true`` is not
    an integer and ``"5"`` is not a number; text still becomes a UUID, a time or an enum member, as
    JSON has no such types. Query strings are all text, so there ``"5"`` is a number.
    """
    if details := nul_characters(data):
        _refuse(details)
    try:
        if json_types:
            return schema.model_validate_json(json.dumps(data), strict=True)
        return schema.model_validate(data)
    except ValidationError as exc:
        details = validation_details(exc)
    _refuse(details)


def list_fields(schema: type[BaseModel]) -> frozenset[str]:
    """Fields of a query schema typed as lists: they may repeat in the query string (``?label=a&label=b``)."""
    names = set()
    for name, info in schema.model_fields.items():
        annotation = info.annotation
        for candidate in (annotation, *typing.get_args(annotation)):
            if typing.get_origin(candidate) in (list, tuple, set, frozenset):
                names.add(info.alias or name)
    return frozenset(names)


def query_data(request, schema: type[BaseModel]) -> dict:
    """The query string as ``schema`` reads it: repeatable keys (list fields) as lists, the others once.

    A key that is not a list given twice (``?status=a&status=b``) is refused rather than one value
    silently winning: the client meant something the answer would not show.
    """
    items = list(request.GET.items())
    if len(items) > MAX_QUERY_PARAMETERS:
        _refuse([{"field": "(query)", "problem": f"has {len(items)} parameters; at most {MAX_QUERY_PARAMETERS} "
                                                 "are taken"}])
    repeatable = list_fields(schema)
    data = dict(items)
    # Counted in one pass: getall() per key rescans the whole query, quadratic in a hostile one.
    repeated = sorted(key for key, count in Counter(key for key, _ in items).items()
                      if count > 1 and key not in repeatable)
    if repeated:
        _refuse([{"field": key, "problem": "is given more than once; send it once"} for key in repeated])
    for key in repeatable:
        if key in data:
            data[key] = [value for name, value in items if name == key]
    return data


def json_depth_exceeds(data, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data`` (parsed JSON) nests objects and arrays more than ``limit`` deep.

    A loop with an explicit stack, not recursion: the question is asked of hostile bodies.
    """
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _json_body(request):
    if not request.body:
        return {}
    if request.content_type not in ("application/json", ""):
        raise UnsupportedMediaType(f"send a JSON body with Content-Type: application/json, not {request.content_type}")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # "[[[[…" deeper than the parser's own stack: hostile, not a crash
        raise _too_deep() from None
    if json_depth_exceeds(data):
        raise _too_deep()
    return data


def _too_deep() -> BadRequest:
    return BadRequest(f"the body is nested too deeply: at most {MAX_JSON_DEPTH} levels of objects and arrays")


def _declared(request, option: str) -> type[BaseModel]:
    contract: ApiContract | None = getattr(request, "api_contract", None)
    schema = getattr(contract, option, None) if contract is not None else None
    if schema is None:
        view = request.matched_route.name if request.matched_route else request.path_info
        raise LookupError(f"the view of {view!r} reads a request it did not declare: add {option}=<Model> to its "
                          "add_view (or view_config)")
    return schema


def _validated(request) -> BaseModel:
    """The JSON body parsed by the view's ``body_schema``."""
    return parse(_declared(request, "body_schema"), request.json_data, json_types=True)


def _validated_query(request) -> BaseModel:
    """The query string parsed by the view's ``query_schema``."""
    schema = _declared(request, "query_schema")
    return parse(schema, query_data(request, schema))


def api_contract_deriver(view, info):
    """Puts the view's :class:`ApiContract` on the request before the view runs (a Pyramid view deriver)."""
    contract = ApiContract.from_options(info.options)
    for name in ("body_schema", "query_schema", "response_schema"):
        schema = getattr(contract, name)
        if schema is not None and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise TypeError(f"{name} of a view on {info.options.get('route_name')!r} must be a pydantic model "
                            f"class, not {schema!r}")
    key = contract_key(info.options.get("route_name"), info.original_view, info.options.get("request_method"))
    declared_contracts(info.registry)[key] = contract

    def with_contract(context, request):
        request.api_contract = contract
        return view(context, request)

    return with_contract


api_contract_deriver.options = CONTRACT_OPTIONS  # type: ignore[attr-defined]  # where pyramid reads a deriver's options


def includeme(config) -> None:
    config.add_request_method(_json_body, "json_data", reify=True)
    config.add_request_method(_validated, "validated")
    config.add_request_method(_validated_query, "validated_query")
    config.add_view_deriver(api_contract_deriver)
