"""The OpenAPI 3.1 document, generated from the routes that are registered, and a readable page of it.

Nothing here is written by hand per route. The document is walked out of Pyramid's own
registry: every route, every view on it with its methods and permission, and the
:class:`~kloyst.http.validation.ApiContract` the view declared (``body_schema``,
``query_schema``, ``response_schema``, ``status``, ``openapi``). The request schemas are the
pydantic classes that validate the requests, so what the document says a route takes is what
the route accepts; the response schemas say field by field what a success answers, and the
tests hold real answers to them (schemathesis, and the executed README and docs).
A plugin's routes appear because the plugin registered them; an uninstalled plugin
registers none, so its routes are absent.

Served, public, at ``GET {API_PREFIX}/openapi.json`` and ``GET {API_PREFIX}/docs`` (HTML,
no script and no third-party assets, so it works offline and under the API's strict
Content-Security-Policy). Built once per process on first request: routes cannot change
after start-up.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import threading
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from pyramid.interfaces import IRoutesMapper
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst import __version__
from kloyst.http.validation import Answer, ApiContract, contract_key, declared_contracts

OPENAPI_VERSION = "3.1.0"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PLACEHOLDER = re.compile(r"\{(\w+)(?::[^}]*)?\}")
REF = "#/components/schemas/{model}"

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "Stable, machine-readable reason (e.g. validation_failed)."},
            "message": {"type": "string", "description": "What went wrong and how to fix it, for people."},
            "details": {"type": "object", "description": "Per-field problems and other specifics."},
        },
    }},
}
STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(
        model="Error")}}}}


def download(media_type: str, *also: str) -> dict:
    """An ``openapi=`` fragment: the success answer is a file of ``media_type`` (or one of ``also``)."""
    content = {media: {"schema": {"type": "string", "format": "binary"}} for media in (media_type, *also)}
    return {"responses": {"200": {"description": "The file, as an attachment.", "content": content}}}


MULTIPART_KINDS = {"file:": {"type": "string", "format": "binary"}, "boolean:": {"type": "boolean"}}


def multipart(required: dict[str, str], optional: dict[str, str] | None = None, status: str = "201") -> dict:
    """An ``openapi=`` fragment: a ``multipart/form-data`` body of fields (name → description).

    The description's first word says the field's kind: ``file:`` (an uploaded file), ``boolean:``
    (the text ``true`` or ``false``), anything else a text field.
    """
    fields = {**required, **(optional or {})}
    properties = {name: {**MULTIPART_KINDS.get(text.split(" ", 1)[0], {"type": "string"}), "description": text}
                  for name, text in fields.items()}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": list(required), "properties": properties}}}},
        "responses": {"413": _error("The body is larger than the upload limit.")}}


def idempotency(required: bool = False) -> dict:
    """An ``openapi=`` fragment: the ``Idempotency-Key`` header (the same key replays the first answer)."""
    return {"parameters": [{"name": "Idempotency-Key", "in": "header", "required": required,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                            "description": "Retry with the same key to get the first answer instead of a "
                                           "second effect; the same key with a different body is 409."}]}


def combine(*fragments: dict) -> dict:
    """Several ``openapi=`` fragments as one (parameters are concatenated, mappings merged)."""
    merged: dict = {}
    for fragment in fragments:
        fragment = json.loads(json.dumps(fragment))
        merged["parameters"] = merged.get("parameters", []) + fragment.pop("parameters", [])
        _merge(merged, fragment)
    if not merged["parameters"]:
        del merged["parameters"]
    return merged


def _route_plugin(route) -> str | None:
    for predicate in route.predicates:
        plugin = getattr(predicate, "plugin", None)
        if plugin:
            return plugin
    return None


def _views(registry) -> dict[str, list]:
    """Every routed view as (introspectable, permission, contract), by route name."""
    contracts = declared_contracts(registry)
    views: dict[str, list] = {}
    for entry in registry.introspector.get_category("views"):
        view = entry["introspectable"]
        if view["route_name"] is None:
            continue
        related = [r for r in entry["related"] if r.category_name == "permissions"]
        contract = contracts[contract_key(view["route_name"], view["callable"], view["request_methods"])]
        views.setdefault(view["route_name"], []).append((view, related[0]["value"] if related else None, contract))
    return views


def _methods(view) -> list[str]:
    methods = view["request_methods"]
    if methods is None:
        return list(METHODS)
    if isinstance(methods, str):
        methods = (methods,)
    return [m for m in METHODS if m in methods]


def _summary(view) -> tuple[str, str]:
    doc = (getattr(view["callable"], "__doc__", None) or "").strip()
    if not doc:
        name = getattr(view["callable"], "__name__", "") or ""
        return name.replace("_", " ").strip().capitalize(), ""
    first, _, rest = doc.partition("\n\n")
    return " ".join(first.split()).replace("``", "`"), " ".join(rest.split()).replace("``", "`")


def _tag(route_name: str, plugin: str | None) -> str:
    if route_name.startswith("admin."):
        return "admin"
    return plugin or route_name.split(".", 1)[0]


def _path_parameters(pattern: str) -> list[dict]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PLACEHOLDER.findall(pattern)]


def _query_parameters(schema: dict, components: dict) -> list[dict]:
    """One parameter per property of a query model's JSON Schema; list fields repeat (``?label=a&label=b``)."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if prop.get("type") == "array" or any(p.get("type") == "array" for p in prop.get("anyOf", ())):
            parameter.update(style="form", explode=True)
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _merge(target: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def _success(contract: ApiContract, schemas: dict) -> dict:
    """The success answer: the view's ``response_schema``; a 204 has no body.

    A JSON view that declared none is shown as a bare object, which the document's own test
    refuses: every operation says what it answers.
    """
    status = str(contract.status)
    answer: dict = {"description": STATUS_TEXT.get(contract.status, "Success")}
    if contract.status == 204:
        return {status: answer}
    if contract.response_schema is not None:
        answer["content"] = {"application/json": {"schema": schemas[(contract.response_schema, "serialization")]}}
    elif contract.json:
        answer["content"] = {"application/json": {"schema": {"type": "object"}}}
    return {status: answer}


def _operation(route, view, permission, contract: ApiContract, schemas: dict, components: dict) -> dict:
    plugin = _route_plugin(route)
    summary, description = _summary(view)
    body, query = contract.body_schema, contract.query_schema
    public = permission == NO_PERMISSION_REQUIRED
    operation: dict[str, Any] = {
        "operationId": f"{route.name}.{{method}}",
        "summary": summary or route.name,
        "tags": [_tag(route.name, plugin)],
        "parameters": _path_parameters(route.pattern),
        "responses": {},
    }
    if description:
        operation["description"] = description
    if plugin:
        operation["x-kloyst-plugin"] = plugin
    if permission not in (None, NO_PERMISSION_REQUIRED):
        operation["x-kloyst-permission"] = permission
    if query is not None:
        operation["parameters"] += _query_parameters(schemas[(query, "validation")], components)
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": schemas[(body, "validation")]}}}
    responses = operation["responses"]
    responses.update(_success(contract, schemas))
    if body is not None:
        responses["400"] = _error("The body is not valid JSON.")
        responses["415"] = _error("The body is not JSON.")
    if body is not None or query is not None:
        responses["422"] = _error("A field is invalid; `error.details.fields` names each one and the problem.")
    if not public:
        responses["401"] = _error("No valid access token (send `Authorization: Bearer <token>`).")
        responses["403"] = _error("The caller's role does not allow this.")
        operation["security"] = [{"bearerAuth": []}]
    else:
        operation["security"] = []
    if plugin or _PLACEHOLDER.search(route.pattern):
        why = "not found, or the plugin is not enabled for the caller's vendor" if plugin else "not found"
        responses["404"] = _error(f"The resource is {why}.")
    responses["default"] = _error("Any other error, in the same envelope.")
    extra = json.loads(json.dumps(contract.openapi))  # a copy: operations must not share dicts
    operation["parameters"] += extra.pop("parameters", [])
    _merge(operation, extra)
    if not operation["parameters"]:
        del operation["parameters"]
    return operation


def _component_schemas(view_entries) -> tuple[dict, dict]:
    """JSON Schema of every declared model: requests as pydantic validates them, answers as it serialises."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for entries in view_entries.values():
        for _, _, contract in entries:
            declared: list[tuple[type[BaseModel] | None, JsonSchemaMode]] = [
                (contract.body_schema, "validation"), (contract.query_schema, "validation"),
                (contract.response_schema, "serialization")]
            for model, mode in declared:
                if model is not None and (model, mode) not in models:
                    models.append((model, mode))
    if not models:
        return {}, {}
    schemas, definitions = models_json_schema(models, ref_template=REF)
    return schemas, definitions.get("$defs", {})


def build_document(registry) -> dict:
    """The OpenAPI 3.1 document of every registered route (see the module docstring)."""
    views = _views(registry)
    schemas, components = _component_schemas(views)
    components = {**components, "Error": ERROR_SCHEMA}
    paths: dict[str, dict] = {}
    for route in registry.queryUtility(IRoutesMapper).get_routes():
        path = _PLACEHOLDER.sub(r"{\1}", route.pattern)
        path = path if path.startswith("/") else f"/{path}"
        for view, permission, contract in views.get(route.name, ()):
            for method in _methods(view):
                operation = _operation(route, view, permission, contract, schemas, components)
                operation["operationId"] = operation["operationId"].format(method=method.lower())
                paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Kloyst API",
            "version": __version__,
            "description": "Multi-tenant WhatsApp Business backend. Errors always use the `Error` envelope. Plugin "
                           "routes (`x-kloyst-plugin`) answer 404 to vendors who have not enabled the plugin.",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                               "description": "The access token from POST /auth/login."}},
        },
    }


class DocumentCache:
    """The document of one registry, built on first use (routes are fixed once the app is made)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: tuple[dict, bytes] | None = None

    def get(self, registry) -> tuple[dict, bytes]:
        with self._lock:
            if self._built is None:
                document = build_document(registry)
                self._built = document, json.dumps(document, indent=1, sort_keys=False).encode()
            return self._built


def _cache(registry) -> DocumentCache:
    cache = registry.get("kloyst.openapi")
    if cache is None:
        cache = registry["kloyst.openapi"] = DocumentCache()
    return cache


class OpenApiDocument(Answer):
    """This document: OpenAPI 3.1, generated from the routes this deployment registered."""

    openapi: str
    info: dict[str, Any]
    servers: list[dict[str, Any]]
    paths: dict[str, dict[str, Any]] = Field(description="Every route and method, plugin routes included.")
    components: dict[str, Any]


def openapi_json(request):
    """The OpenAPI 3.1 document of this deployment's routes, plugin routes included."""
    _, body = _cache(request.registry).get(request.registry)
    response = Response(body=body, content_type="application/json", charset="utf-8")
    response.cache_control = "no-cache"
    return response


_STYLE = ("body{font:15px/1.5 system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}"
          "h2{border-bottom:1px solid #ccc;margin-top:2.5rem}h3{margin:1.5rem 0 .25rem;font-size:1rem}"
          "code,pre{font:13px ui-monospace,monospace;background:#f4f4f4}pre{padding:.5rem;overflow:auto}"
          ".m{display:inline-block;min-width:4.5rem;font-weight:700}table{border-collapse:collapse}"
          "td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
DOCS_CSP = f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; frame-ancestors 'none'; base-uri 'none'"


# A code span as docstrings write it (``reST``) or descriptions do (`markdown`).
_CODE_SPAN = re.compile(r"``(.+?)``|`([^`]+)`")


def _inline(text: str) -> str:
    """Docstring or description text as HTML: escaped, code spans in ``<code>``, paragraphs kept."""
    escaped = _CODE_SPAN.sub(lambda m: f"<code>{m.group(1) or m.group(2)}</code>", html.escape(text))
    return escaped.replace("\n\n", "</p><p>")


def render_docs(document: dict, spec_url: str) -> str:
    """The document as one HTML page: operations grouped by tag, with parameters, bodies and answers."""
    e = html.escape
    components = document["components"]["schemas"]
    by_tag: dict[str, list] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            by_tag.setdefault(operation["tags"][0], []).append((path, method, operation))
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>{e(document['info']['title'])}</title>",
             f"<style>{_STYLE}</style><h1>{e(document['info']['title'])} {e(document['info']['version'])}</h1>",
             f"<p>{_inline(document['info']['description'])}</p>",
             f"<p>Machine-readable: <a href='{e(spec_url)}'>{e(spec_url)}</a> (OpenAPI {e(document['openapi'])})."
             " Authenticate with <code>Authorization: Bearer &lt;access token&gt;</code> from "
             "<code>POST /auth/login</code>.</p><ul>"]
    parts += [f"<li><a href='#{e(tag)}'>{e(tag)}</a> ({len(ops)})</li>" for tag, ops in sorted(by_tag.items())]
    parts.append("</ul>")
    for tag, operations in sorted(by_tag.items()):
        parts.append(f"<h2 id='{e(tag)}'>{e(tag)}</h2>")
        for path, method, operation in operations:
            access = "public" if operation.get("security") == [] else operation.get("x-kloyst-permission",
                                                                                    "signed in")
            parts.append(f"<h3 id='{e(operation['operationId'])}'><span class=m>{e(method.upper())}</span>"
                         f"<code>{e(path)}</code></h3><p>{_inline(operation['summary'])} <em>({e(access)})</em></p>")
            if operation.get("description"):
                parts.append(f"<p>{_inline(operation['description'])}</p>")
            if operation.get("parameters"):
                parts.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr>")
                for p in operation["parameters"]:
                    described = f"<br>{_inline(p['description'])}" if p.get("description") else ""
                    parts.append(f"<tr><td><code>{e(p['name'])}</code>{described}</td><td>{e(p['in'])}</td>"
                                 f"<td>{'yes' if p.get('required') else 'no'}</td>"
                                 f"<td>{_type_html(p['schema'])}</td></tr>")
                parts.append("</table>")
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                parts.append(f"<p>Body ({e(media)}): {_answer_html(content.get('schema', {}))}</p>")
            for code, answer in operation["responses"].items():
                for media, content in answer.get("content", {}).items() if code.startswith("2") else ():
                    parts.append(f"<p>Answer {e(code)} ({e(media)}): {_answer_html(content.get('schema', {}))}</p>")
            answers = ", ".join(f"{e(code)} {_inline(answer.get('description', ''))}"
                                for code, answer in operation["responses"].items() if code != "default")
            parts.append(f"<p>Answers: {answers}.</p>")
    # Bodies and answers name their schema; each is written out once here, field by field, its references linked.
    parts.append("<h2 id='schemas'>Schemas</h2>")
    for name, schema in sorted(components.items()):
        parts.append(f"<h3 id='schema-{e(name)}'>{e(name)}</h3>{_schema_html(schema)}")
    return "".join(parts) + "</html>"


def _type_html(schema: dict) -> str:
    """A schema in a few words (``string (date-time)``, ``array of ContactOut``), references as links."""
    e = html.escape
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"<a href='#schema-{e(name)}'>{e(name)}</a>"
    if "const" in schema:
        return f"<code>{e(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{e(json.dumps(value))}</code>" for value in schema["enum"])
    for choice in ("anyOf", "oneOf"):
        if choice in schema:
            return " or ".join(_type_html(option) for option in schema[choice])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(_type_html({**schema, "type": one}) for one in kind)
    if kind == "array":
        return f"array of {_type_html(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type_html(schema['additionalProperties'])}"
    detail = schema.get("format") or schema.get("pattern")
    return f"{e(kind)} (<code>{e(detail)}</code>)" if detail else e(kind)


def _schema_html(schema: dict) -> str:
    """One schema for reading: its description, then a table of its fields (or its type, when it has none)."""
    parts = [f"<p>{_inline(schema['description'])}</p>"] if schema.get("description") else []
    properties = schema.get("properties")
    if not properties:
        parts.append(f"<p>{_type_html(schema)}</p>")
        return "".join(parts)
    required = set(schema.get("required", ()))
    parts.append("<table><tr><th>field</th><th>type</th><th>required</th><th></th></tr>")
    for field_name, field_schema in properties.items():
        parts.append(f"<tr><td><code>{html.escape(field_name)}</code></td><td>{_type_html(field_schema)}</td>"
                     f"<td>{'yes' if field_name in required else 'no'}</td>"
                     f"<td>{_inline(field_schema.get('description', ''))}</td></tr>")
    parts.append("</table>")
    if schema.get("additionalProperties") is False:
        parts.append("<p>No other field.</p>")
    return "".join(parts)


def _answer_html(schema: dict) -> str:
    """A body or answer: a link to its named schema, or the schema itself when it has no name."""
    if "$ref" in schema:
        return _type_html(schema)
    return _schema_html(schema) if schema.get("properties") else _type_html(schema)


def docs_page(request):
    """This API's reference as a page for people, generated from the same document."""
    document, _ = _cache(request.registry).get(request.registry)
    response = Response(render_docs(document, request.route_path("ops.openapi")), content_type="text/html",
                        charset="utf-8")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.cache_control = "no-cache"
    return response


def includeme(config) -> None:
    """Registered under the API prefix (``/v1/openapi.json``, ``/v1/docs``); public like the health checks."""
    config.add_route("ops.openapi", "/openapi.json")
    config.add_route("ops.docs", "/docs")
    config.add_view(openapi_json, route_name="ops.openapi", request_method="GET", permission=NO_PERMISSION_REQUIRED,
                    response_schema=OpenApiDocument)
    config.add_view(docs_page, route_name="ops.docs", request_method="GET", permission=NO_PERMISSION_REQUIRED,
                    openapi={"responses": {"200": {"content": {"text/html": {"schema": {"type": "string"}}}}}})
