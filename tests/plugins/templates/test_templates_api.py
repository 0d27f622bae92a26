"""Submitting, listing and reading templates, and storing a variable mapping, through /v1/templates."""

from __future__ import annotations

import pytest
from templates_support import TOKEN, WABA_ID, body_component

from kloyst.meta.client import MetaClient
from kloyst.meta.errors import MetaError

URL = "/v1/templates"


def definition(name="order_ready", **changes) -> dict:
    return {"meta_waba_id": WABA_ID, "name": name, "language": "en_US", "category": "UTILITY",
            "components": [body_component("Hi {{1}}, order {{2}} is ready.", ["Ann", "A-1"])], **changes}


def test_a_valid_template_is_submitted_to_meta_and_stored_with_its_id_and_status(testapp, vendor, meta_sandbox):
    meta_sandbox.state.behaviour.new_template_status = "PENDING"
    created = testapp.post_json(URL, definition(), headers=vendor.headers, status=201).json["template"]
    at_meta = meta_sandbox.state.find_template(WABA_ID, "order_ready", "en_US")
    assert at_meta is not None and at_meta.components == definition()["components"]
    assert created["meta_template_id"] == at_meta.id
    assert created["status"] == "PENDING" and created["category"] == "UTILITY"
    assert created["body_variables"] == ["1", "2"] and created["header_variables"] == []
    assert created["parameter_format"] == "POSITIONAL" and created["meta_waba_id"] == WABA_ID
    assert testapp.get(f"{URL}/{created['id']}", headers=vendor.headers).json["template"] == created


def test_a_named_template_is_submitted_with_its_format(testapp, vendor, meta_sandbox):
    body = {"type": "BODY", "text": "Hi {{first_name}}",
            "example": {"body_text_named_params": [{"param_name": "first_name", "example": "Ann"}]}}
    created = testapp.post_json(URL, definition(parameter_format="NAMED", components=[body]),
                                headers=vendor.headers, status=201).json["template"]
    assert created["parameter_format"] == "NAMED" and created["body_variables"] == ["first_name"]
    assert meta_sandbox.state.find_template(WABA_ID, "order_ready", "en_US").parameter_format == "NAMED"


def test_a_definition_with_problems_is_422_listing_each_and_never_reaches_meta(testapp, vendor, meta_sandbox, db):
    components = [{"type": "HEADER", "format": "TEXT", "text": "For {{1}}"},
                  {"type": "FOOTER", "text": "{{1}} and {{name}}"}]
    error = testapp.post_json(URL, definition(components=components), headers=vendor.headers,
                              status=422).json["error"]
    assert error["code"] == "invalid_template"
    fields = error["details"]["fields"]
    assert [f["field"] for f in fields] == ["components[0].example.header_text", "components[1].text",
                                            "components"]
    assert "a BODY component is required" in error["message"]
    assert meta_sandbox.state.templates[WABA_ID] == []


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "Order Ready"}, "name"), ({"name": "x" * 513}, "name"), ({"language": "english"}, "language"),
    ({"category": "PROMO"}, "category"), ({"parameter_format": "NUMBERED"}, "parameter_format"),
    ({"components": []}, "components"), ({"meta_waba_id": "abc"}, "meta_waba_id"), ({"extra": 1}, "extra"),
])
def test_a_malformed_request_is_422_naming_the_field(testapp, vendor, change, field):
    error = testapp.post_json(URL, definition(**change), headers=vendor.headers, status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == field


def test_the_same_name_and_language_twice_is_409_naming_the_first(testapp, vendor):
    first = testapp.post_json(URL, definition(), headers=vendor.headers, status=201).json["template"]
    error = testapp.post_json(URL, definition(), headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "duplicate_template" and error["details"]["template_id"] == first["id"]
    testapp.post_json(URL, definition(language="es"), headers=vendor.headers, status=201)


def test_a_name_meta_already_has_is_409_with_metas_words(testapp, vendor, sandbox_template, db):
    sandbox_template("order_ready", [body_component("Made in WhatsApp Manager")])
    error = testapp.post_json(URL, definition(), headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "duplicate_template"
    assert "already exists" in error["message"] and error["details"]["meta_subcode"] == 2388024
    assert testapp.get(URL, headers=vendor.headers).json["items"] == []


def test_metas_permanent_refusal_is_422_with_its_message_and_code_and_nothing_stored(testapp, vendor,
                                                                                        meta_sandbox):
    del meta_sandbox.state.templates[WABA_ID]  # Meta no longer knows the WABA
    error = testapp.post_json(URL, definition(), headers=vendor.headers, status=422).json["error"]
    assert error["code"] == "meta_refused"
    assert error["details"]["meta_code"] == 100 and "does not exist" in error["message"]
    assert testapp.get(URL, headers=vendor.headers).json["items"] == []


def test_a_token_meta_refuses_is_502_asking_for_a_new_token(testapp, vendor, meta_sandbox):
    meta_sandbox.state.behaviour.access_token = TOKEN + "-rotated"
    error = testapp.post_json(URL, definition(), headers=vendor.headers, status=502).json["error"]
    assert error["code"] == "meta_auth_failed" and error["details"]["meta_code"] == 190
    assert "update the WABA's token" in error["message"]
    assert testapp.get(URL, headers=vendor.headers).json["items"] == []


def test_meta_unreachable_is_502_suggesting_a_sync_before_retrying(testapp, vendor, registry, monkeypatch):
    unreachable = MetaClient("http://127.0.0.1:9", "v23.0", timeout=2)
    monkeypatch.setitem(registry, "kloyst.meta", unreachable)
    error = testapp.post_json(URL, definition(), headers=vendor.headers, status=502).json["error"]
    assert error["code"] == "meta_unreachable"
    assert testapp.get(URL, headers=vendor.headers).json["items"] == []


def test_a_transient_meta_error_is_503_with_retry_after(testapp, vendor, registry, monkeypatch):
    def busy(*args, **kwargs):
        raise MetaError("(#2) API Service", http_status=503, code=2, is_transient=True)

    monkeypatch.setattr(registry["kloyst.meta"], "create_template", busy)
    response = testapp.post_json(URL, definition(), headers=vendor.headers, status=503)
    assert response.json["error"]["code"] == "meta_unavailable" and response.json["error"]["details"]["meta_code"] == 2
    assert int(response.headers["Retry-After"]) >= 1


def test_a_waba_the_vendor_cannot_use_is_422(testapp, vendor, accounts, enable_plugin, add_waba):
    other = accounts.vendor("Other")
    add_waba(other, "999000111")
    error = testapp.post_json(URL, definition(meta_waba_id="999000111"), headers=vendor.headers,
                              status=422).json["error"]
    assert error["code"] == "unknown_waba"


def test_the_list_filters_and_pages_newest_first(testapp, vendor, stored_template):
    stored_template(vendor, "alpha_promo", [body_component("A")], status="APPROVED")
    stored_template(vendor, "beta_promo", [body_component("B")], status="REJECTED")
    stored_template(vendor, "gamma_notice", [body_component("C")], status="APPROVED", language="es")

    def names(**query):
        return [t["name"] for t in testapp.get(URL, query, headers=vendor.headers).json["items"]]

    assert names() == ["gamma_notice", "beta_promo", "alpha_promo"]
    assert names(status="APPROVED") == ["gamma_notice", "alpha_promo"]
    assert names(name="promo") == ["beta_promo", "alpha_promo"]
    assert names(language="es") == ["gamma_notice"]
    assert names(category="MARKETING") == []
    assert names(meta_waba_id="1") == []
    first = testapp.get(URL, {"limit": 2}, headers=vendor.headers).json
    assert [t["name"] for t in first["items"]] == ["gamma_notice", "beta_promo"]
    rest = testapp.get(URL, {"limit": 2, "cursor": first["next_cursor"]}, headers=vendor.headers).json
    assert [t["name"] for t in rest["items"]] == ["alpha_promo"] and rest["next_cursor"] is None


def test_a_name_filter_treats_wildcards_literally(testapp, vendor, stored_template):
    stored_template(vendor, "a_b", [body_component("A")])
    stored_template(vendor, "axb", [body_component("A")])
    assert [t["name"] for t in testapp.get(URL, {"name": "a_"}, headers=vendor.headers).json["items"]] == ["a_b"]


def test_an_unknown_status_filter_is_422(testapp, vendor):
    error = testapp.get(URL, {"status": "GREAT"}, headers=vendor.headers, status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "status"


def test_a_variable_mapping_is_checked_against_the_template_and_stored(testapp, vendor, stored_template):
    template = stored_template(vendor, "hello", [{"type": "HEADER", "format": "TEXT", "text": "For {{1}}"},
                                                 body_component("Hi {{1}}, tier {{2}}")])
    url = f"{URL}/{template.id}/variable-mapping"
    mapping = {"1": {"field": "name", "default": "there"}, "header.1": {"value": "you"}}
    before = testapp.get(f"{URL}/{template.id}", headers=vendor.headers).json["template"]
    stored = testapp.put_json(url, {"variable_mapping": mapping}, headers=vendor.headers).json["template"]
    assert stored["variable_mapping"] == mapping and stored["updated_at"] > before["updated_at"]
    assert testapp.get(f"{URL}/{template.id}", headers=vendor.headers).json["template"]["variable_mapping"] == mapping
    error = testapp.put_json(url, {"variable_mapping": {"3": {"field": "name"}, "2": {"field": "email"}}},
                             headers=vendor.headers, status=422).json["error"]
    assert error["code"] == "invalid_variable_mapping"
    assert error["details"]["fields"] == [
        {"field": "variable_mapping", "problem": "'3' is not a variable of this template (its variables: 1, 2, "
                                                 "header.1)"},
        {"field": "variable_mapping",
         "problem": "2: field 'email' is not a contact field: use name, mobile, country or attributes.<name>"}]
    assert testapp.put_json(url, {"variable_mapping": {}}, headers=vendor.headers).json["template"][
        "variable_mapping"] == {}


def test_another_vendors_template_is_404_and_absent_from_the_list(testapp, vendor, accounts, enable_plugin,
                                                                  stored_template):
    other = accounts.vendor("Other")
    enable_plugin(other, "waba")
    enable_plugin(other, "templates")
    theirs = stored_template(other, "their_template", [body_component("Hi {{1}}")])
    testapp.get(f"{URL}/{theirs.id}", headers=vendor.headers, status=404)
    testapp.put_json(f"{URL}/{theirs.id}/variable-mapping", {"variable_mapping": {}}, headers=vendor.headers,
                     status=404)
    assert testapp.get(URL, headers=vendor.headers).json["items"] == []
    assert [t["name"] for t in testapp.get(URL, headers=other.headers).json["items"]] == ["their_template"]


def test_a_vendor_without_the_templates_plugin_gets_404(testapp, owner, enable_plugin):
    enable_plugin(owner, "waba")
    testapp.get(URL, headers=owner.headers, status=404)
    testapp.post_json(URL, definition(), headers=owner.headers, status=404)
    testapp.post_json(f"{URL}/sync", {}, headers=owner.headers, status=404)


def test_a_vendor_cannot_submit_templates_into_the_platforms_shared_waba(testapp, vendor, db, registry,
                                                                        meta_sandbox):
    from kloyst.db import tenancy
    from kloyst.sandbox.state import PhoneNumber as SandboxNumber
    from kloyst_plugins.waba.access import encrypt_shared_token
    from kloyst_plugins.waba.models import PhoneNumber, SharedWaba

    encrypted, kid = encrypt_shared_token(registry["kloyst.cipher"], "platform-token")
    shared = SharedWaba(meta_waba_id="555000777", name="Shared", access_token_enc=encrypted, enc_kid=kid)
    with tenancy.unscoped(db):
        db.add(shared)
        db.flush()
        db.add(PhoneNumber(vendor_id=vendor.vendor_id, meta_phone_number_id="1067777", shared_waba_id=shared.id,
                           display_phone_number="+1 555 0177"))
    db.commit()
    meta_sandbox.state.add_number(SandboxNumber(id="1067777", waba_id="555000777", display_phone_number="+1 555 0177"))
    error = testapp.post_json(URL, definition(meta_waba_id="555000777"), headers=vendor.headers, status=403).json
    assert error["error"]["code"] == "shared_waba_templates"
    assert meta_sandbox.state.find_template("555000777", "order_ready", "en_US") is None
