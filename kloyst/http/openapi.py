"""The OpenAPI 3.1 document, generated from the routes that are registered, and a readable page of it.

Nothing here is written by hand per route. The document is walked out of Pyramid's own
registry: every route, every view on it with its methods and permission, and the
:class:`~kloyst.http.validation.ApiContract` the view declared (``body_schema``,
``query_schema``, ``status``, ``openapi``). The schemas are the pydantic classes that
validate the requests, so what the document says a route takes is what the route accepts.
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

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from pyramid.interfaces import IRoutesMapper
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst.http.pagination import Page
from kloyst.http.validation import ApiContract, contract_key, declared_contracts

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
PAGE_SCHEMA = {
    "type": "object",
    "description": "One page of a list, newest first unless the operation says otherwise.",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {
            "type": ["string", "null"],
            "description": "Pass as `cursor` for the next page; null on the last.",
        },
    },
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


def _success(contract: ApiContract) -> dict:
    status = str(contract.status)
    answer: dict = {"description": STATUS_TEXT.get(contract.status, "Success")}
    if contract.json and contract.status != 204:
        paged = contract.query_schema is not None and issubclass(contract.query_schema, Page)
        schema = {"$ref": REF.format(model="ListPage")} if paged else {"type": "object"}
        answer["content"] = {"application/json": {"schema": schema}}
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
    responses.update(_success(contract))
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
    models: list[tuple[type[BaseModel], str]] = []
    for entries in view_entries.values():
        for _, _, contract in entries:
            for model in (contract.body_schema, contract.query_schema):
                if model is not None and (model, "validation") not in models:
                    models.append((model, "validation"))
    if not models:
        return {}, {}
    schemas, definitions = models_json_schema(models, ref_template=REF)
    return schemas, definitions.get("$defs", {})


def build_document(registry) -> dict:
    """The OpenAPI 3.1 document of every registered route (see the module docstring)."""
    from kloyst import __version__

    views = _views(registry)
    schemas, components = _component_schemas(views)
    components = {**components, "Error": ERROR_SCHEMA, "ListPage": PAGE_SCHEMA}
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
        self._body: bytes | None = None
        self._document: dict | None = None

    def get(self, registry) -> tuple[dict, bytes]:
        with self._lock:
            if self._document is None:
                self._document = build_document(registry)
                self._body = json.dumps(self._document, indent=1, sort_keys=False).encode()
            return self._document, self._body


def _cache(registry) -> DocumentCache:
    cache = registry.get("kloyst.openapi")
    if cache is None:
        cache = registry["kloyst.openapi"] = DocumentCache()
    return cache


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


def _schema_text(schema: dict, components: dict, depth: int = 0) -> str:
    """A schema with its references written out (two levels), for reading rather than for machines."""
    def expand(node, level):
        if isinstance(node, dict):
            if "$ref" in node and level < 3:
                return expand(components.get(node["$ref"].rsplit("/", 1)[1], node), level + 1)
            return {key: expand(value, level) for key, value in node.items()}
        if isinstance(node, list):
            return [expand(item, level) for item in node]
        return node
    return json.dumps(expand(schema, depth), indent=2)


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
             f"<p>{e(document['info']['description'])}</p>",
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
                         f"<code>{e(path)}</code></h3><p>{e(operation['summary'])} <em>({e(access)})</em></p>")
            if operation.get("description"):
                parts.append(f"<p>{e(operation['description'])}</p>")
            if operation.get("parameters"):
                parts.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr>")
                for p in operation["parameters"]:
                    parts.append(f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                                 f"<td>{'yes' if p.get('required') else 'no'}</td>"
                                 f"<td><code>{e(json.dumps(p['schema']))}</code></td></tr>")
                parts.append("</table>")
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                parts.append(f"<p>Body ({e(media)}):</p><pre>{e(_schema_text(content.get('schema', {}), components))}"
                             "</pre>")
            answers = ", ".join(f"{e(code)} {e(answer.get('description', ''))}"
                                for code, answer in operation["responses"].items() if code != "default")
            parts.append(f"<p>Answers: {answers}.</p>")
    return "".join(parts) + "</html>"


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
                    openapi={"responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}}}})
    config.add_view(docs_page, route_name="ops.docs", request_method="GET", permission=NO_PERMISSION_REQUIRED,
                    openapi={"responses": {"200": {"content": {"text/html": {"schema": {"type": "string"}}}}}})
