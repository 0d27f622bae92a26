"""The OpenAPI document covers every registered route, is valid OpenAPI 3.1, and says what the views really take."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from pydantic import BaseModel
from pyramid.interfaces import IRoutesMapper

from kloyst import make_configurator
from kloyst.http import openapi
from kloyst.http.validation import Schema
from kloyst.testing import route_walk
from kloyst.testing.answers import AnswerChecker

PLACEHOLDER = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def registered_operations(registry) -> set[tuple[str, str]]:
    """(METHOD, path) of every view on every route, straight from Pyramid's route table."""
    operations = set()
    for route in registry.queryUtility(IRoutesMapper).get_routes():
        path = PLACEHOLDER.sub(r"{\1}", route.pattern)
        path = path if path.startswith("/") else f"/{path}"
        operations |= {(method, path) for method in route_walk.route_methods(registry, route.name)}
    return operations


def documented_operations(document) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


@pytest.fixture
def document(testapp):
    return testapp.get("/v1/openapi.json").json


def test_every_registered_route_and_method_is_in_the_document(document, registry):
    registered = registered_operations(registry)
    missing = registered - documented_operations(document)
    assert not missing, f"routes missing from /v1/openapi.json: {sorted(missing)}"
    assert documented_operations(document) == registered
    assert len(registered) > 100  # the walk really saw the plugins' routes


def test_a_route_missing_from_the_document_fails_the_coverage_check(document, registry):
    trimmed = {**document, "paths": {p: ops for p, ops in document["paths"].items() if p != "/v1/contacts"}}
    assert ("GET", "/v1/contacts") in registered_operations(registry) - documented_operations(trimmed)


def test_the_document_is_valid_openapi_3_1(document):
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    assert document["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_request_bodies_are_the_schemas_that_validate_them(document):
    create = document["paths"]["/v1/contacts"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/"
                                                                                      "ContactCreate"}
    contact_create = document["components"]["schemas"]["ContactCreate"]
    # A contact is known by its number, its BSUID or both: neither field alone is required (the view says so, 422).
    assert {"mobile", "bsuid", "username"} <= set(contact_create["properties"])
    assert "mobile" not in contact_create.get("required", [])
    assert contact_create["additionalProperties"] is False  # Schema refuses unknown fields, and says so
    assert set(create["responses"]) >= {"201", "400", "401", "403", "404", "415", "422", "default"}


def test_query_schemas_become_query_parameters_and_list_fields_repeat(document):
    listing = document["paths"]["/v1/contacts"]["get"]
    answer = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ContactPage"}
    page = document["components"]["schemas"]["ContactPage"]
    assert page["properties"]["items"]["items"] == {"$ref": "#/components/schemas/ContactOut"}
    parameters = {p["name"]: p for p in listing["parameters"]}
    assert {"cursor", "limit", "label", "country", "phone"} <= set(parameters)
    assert parameters["label"]["explode"] is True and parameters["label"]["in"] == "query"


def test_path_parameters_public_routes_and_plugin_gates_are_described(document):
    get_contact = document["paths"]["/v1/contacts/{id}"]["get"]
    assert get_contact["parameters"][0] == {"name": "id", "in": "path", "required": True,
                                            "schema": {"type": "string"}}
    assert get_contact["x-kloyst-plugin"] == "contacts" and get_contact["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/v1/auth/login"]["post"]["security"] == []
    assert "x-kloyst-plugin" not in document["paths"]["/v1/auth/me"]["get"]
    assert document["paths"]["/v1/campaigns/{id}/launch"]["post"]["x-kloyst-permission"] == "vendor.admin"


def test_files_uploads_and_idempotency_keys_are_described(document):
    upload = document["paths"]["/v1/imports"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file"] and upload["properties"]["file"]["format"] == "binary"
    assert "text/csv" in document["paths"]["/v1/wallet/statement.csv"]["get"]["responses"]["200"]["content"]
    assert "application/pdf" in document["paths"]["/v1/quotations/{id}/pdf"]["get"]["responses"]["200"]["content"]
    topup = document["paths"]["/v1/admin/vendors/{id}/wallet/topups"]["post"]
    assert {"name": "Idempotency-Key", "in": "header", "required": True} .items() <= next(
        p for p in topup["parameters"] if p["name"] == "Idempotency-Key").items()


def built_registry(settings, here):
    config = make_configurator({"here": str(here)}, dict(settings), environ={})
    config.commit()  # the plugins' routes are pending actions until the app is made
    return config.registry


def test_plugin_routes_appear_only_when_the_plugin_is_installed(kloyst_settings, tmp_path, monkeypatch):
    with_example = built_registry(kloyst_settings, tmp_path)
    paths = openapi.build_document(with_example)["paths"]
    assert "/v1/example/notes" in paths  # the example third-party plugin is installed in the test venv

    from kloyst.plugins import manager

    installed = manager.installed_entry_points()
    monkeypatch.setattr(manager, "installed_entry_points", lambda: [ep for ep in installed if ep.name != "campaigns"])
    without = built_registry(kloyst_settings, tmp_path)
    paths = openapi.build_document(without)["paths"]
    assert not [p for p in paths if p.startswith("/v1/campaigns")]
    assert "/v1/contacts" in paths


def test_the_docs_page_lists_every_operation_without_scripts(testapp, document):
    page = testapp.get("/v1/docs")
    assert page.content_type == "text/html"
    assert "<script" not in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]
    for item in document["paths"].values():
        for operation in item.values():
            assert f"id='{operation['operationId']}'" in page.text


def _resolved(schema: dict, document) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _declares_fields(schema: dict, document) -> bool:
    """An object with its properties listed, or a choice (anyOf / oneOf) of such objects."""
    schema = _resolved(schema, document)
    choices = schema.get("anyOf") or schema.get("oneOf")
    if choices:
        return all(_declares_fields(choice, document) for choice in choices)
    return schema.get("type") == "object" and bool(schema.get("properties"))


def test_every_operation_declares_the_body_of_its_success_answer(document):
    undeclared = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                content = answer.get("content", {})
                if status == "204":
                    ok = content == {}  # No Content: there is no body to declare
                elif not content:
                    ok = False
                else:
                    ok = all(_declares_fields(media["schema"], document) if name == "application/json"
                             else media.get("schema", {}).get("type") == "string" for name, media in content.items())
                if not ok:
                    undeclared.append(f"{method.upper()} {path} → {status}: {content}")
    assert undeclared == [], "success answers without a declared body:\n" + "\n".join(undeclared)


def test_a_bare_object_answer_fails_the_declaration_check(document):
    assert not _declares_fields({"type": "object"}, document)
    assert _declares_fields({"$ref": "#/components/schemas/ContactAnswer"}, document)


def test_answers_are_checked_against_the_document_and_a_field_it_does_not_list_fails(testapp, document, owner):
    checker = AnswerChecker(document)
    me = testapp.get("/v1/auth/me", headers=owner.headers)
    assert checker.problems("GET", "/v1/auth/me", me.status_int, me.body, me.content_type) == []
    grown = {**me.json, "user": {**me.json["user"], "password_hash": "x"}}
    assert any("password_hash" in problem
               for problem in checker.problems("GET", "/v1/auth/me", 200, json.dumps(grown)))
    typed = {**me.json, "enabled_plugins": "contacts"}
    assert checker.problems("GET", "/v1/auth/me", 200, json.dumps(typed)) != []
    assert checker.problems("GET", "/v1/auth/me", 201, me.body) != []  # a status the document does not declare


def test_the_docs_page_shows_answers_and_renders_code_spans(testapp):
    page = testapp.get("/v1/docs").text
    assert "<code>error.details.fields</code>" in page  # written `error.details.fields` in the description
    assert "`" not in page.split("</style>", 1)[1]
    assert "Answer 200 (application/json)" in page


class Undeclared(Schema):
    name: str


def test_a_view_that_reads_a_body_it_did_not_declare_is_a_programming_error(registry):
    from pyramid.testing import DummyRequest

    from kloyst.http.validation import ApiContract, _validated

    request = DummyRequest(json_body={"name": "x"})
    request.json_data = {"name": "x"}
    request.matched_route = None
    request.api_contract = ApiContract()
    with pytest.raises(LookupError, match="body_schema"):
        _validated(request)
    request.api_contract = ApiContract(body_schema=Undeclared)
    assert _validated(request) == Undeclared(name="x")


def test_a_body_schema_that_is_not_a_pydantic_model_is_refused_at_start_up():
    from pyramid.config import Configurator

    config = Configurator()
    config.include("kloyst.http.validation")
    config.add_route("thing", "/thing")
    config.add_view(lambda request: {}, route_name="thing", renderer="json", body_schema=dict)
    with pytest.raises(Exception, match="must be a pydantic model class"):
        config.commit()
    assert issubclass(Undeclared, BaseModel)
