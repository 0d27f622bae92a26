"""Request bodies and query strings validated by pydantic models: a bad request is a 422 that says what to fix.

pydantic gives precise, per-field messages and JSON Schema for the OpenAPI document from
the same class, which hand-written checks cannot.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from kloyst.errors import BadRequest, Unprocessable, UnsupportedMediaType

T = TypeVar("T", bound=BaseModel)


class Schema(BaseModel):
    """Base for request schemas: unknown fields are refused, so a client can never set what it should not."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def validation_details(exc: ValidationError) -> list[dict]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def parse(schema: type[T], data) -> T:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        details = validation_details(exc)
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        raise Unprocessable(f"the request is invalid: {summary}", details={"fields": details}) from None


def _json_body(request):
    if not request.body:
        return {}
    if request.content_type not in ("application/json", ""):
        raise UnsupportedMediaType(f"send a JSON body with Content-Type: application/json, not {request.content_type}")
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # "[[[[…" within the size limit: hostile, not a crash
        raise BadRequest("the body is nested too deeply") from None


def _validated(request, schema: type[T]) -> T:
    return parse(schema, request.json_data)


def _validated_query(request, schema: type[T]) -> T:
    return parse(schema, dict(request.GET))


def includeme(config) -> None:
    config.add_request_method(_json_body, "json_data", reify=True)
    config.add_request_method(_validated, "validated")
    config.add_request_method(_validated_query, "validated_query")
