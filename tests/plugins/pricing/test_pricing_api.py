"""The vendor's pricing API: rates, quotations from an audience, and the quotation PDF's life."""

from __future__ import annotations

import io
import uuid

from pypdf import PdfReader

from kloyst.plugins import hookspecs
from kloyst_plugins.pricing import pdf as pdf_module
from kloyst_plugins.pricing.tasks import GENERATE_PDF
from kloyst_plugins.templates.models import MessageTemplate


def quote(testapp, account, body: dict, status: int = 201) -> dict:
    return testapp.post_json("/v1/quotations", body, headers=account.headers, status=status).json


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


def test_a_quotation_counts_the_audience_by_country_and_leaves_out_opted_out_contacts(testapp, vendor,
                                                                                      add_contacts):
    add_contacts(vendor, {"BR": 3, "IN": 2}, labels=["vip"])
    add_contacts(vendor, {"BR": 5}, labels=["vip"], opted_out=True)
    add_contacts(vendor, {"BR": 7})  # not in the audience

    answer = quote(testapp, vendor, {"category": "MARKETING", "audience": {"labels_include": ["vip"]}})["quotation"]

    assert answer["recipients"] == 5
    assert [(i["country"], i["quantity"], i["unit_price"]) for i in answer["items"]] == [
        ("BR", 3, "0.062500"), ("IN", 2, "0.011800")]
    assert answer["total"] == "0.211100"
    assert answer["currency"] == "USD" and answer["status"] == "ACTIVE"
    assert answer["source"]["audience"]["labels_include"] == ["vip"]
    assert answer["wallet"] == {"available": "0.000000", "sufficient": False}


def test_a_template_quote_takes_the_templates_category(testapp, db, vendor, add_contacts):
    add_contacts(vendor, {"IN": 1})
    template = MessageTemplate(vendor_id=vendor.vendor_id, meta_waba_id="1", name="otp", language="en",
                               category="AUTHENTICATION")
    db.add(template)
    db.commit()

    answer = quote(testapp, vendor, {"template_id": str(template.id), "audience": {"all": True}})["quotation"]
    assert answer["category"] == "AUTHENTICATION"
    mismatch = quote(testapp, vendor, {"template_id": str(template.id), "category": "MARKETING",
                                       "audience": {"all": True}}, status=422)
    assert mismatch["error"]["code"] == "category_mismatch"


def test_a_request_without_category_or_audience_source_is_422(testapp, vendor):
    error = quote(testapp, vendor, {"audience": {"all": True}}, status=422)["error"]
    assert "category" in error["message"]
    error = quote(testapp, vendor, {"category": "UTILITY", "audience": {}}, status=422)["error"]
    assert "audience" in str(error["details"])


def test_an_empty_audience_is_422(testapp, vendor):
    assert quote(testapp, vendor, {"category": "UTILITY", "audience": {"all": True}},
                 status=422)["error"]["code"] == "empty_audience"


def test_quotations_are_listed_and_another_vendors_is_404(testapp, pricing_vendor, add_contacts):
    alice, bob = pricing_vendor("Alice"), pricing_vendor("Bob")
    add_contacts(alice, {"BR": 1})
    made = quote(testapp, alice, {"category": "MARKETING", "audience": {"all": True}})["quotation"]

    listed = testapp.get("/v1/quotations", headers=alice.headers).json["items"]
    assert [q["id"] for q in listed] == [made["id"]]
    assert testapp.get(f"/v1/quotations/{made['id']}", headers=alice.headers).json["quotation"]["total"] == "0.062500"
    assert testapp.get("/v1/quotations", headers=bob.headers).json["items"] == []
    testapp.get(f"/v1/quotations/{made['id']}", headers=bob.headers, status=404)
    testapp.get(f"/v1/quotations/{made['id']}/pdf", headers=bob.headers, status=404)


def test_the_pdf_task_is_enqueued_after_commit_and_the_pdf_is_409_until_ready(testapp, vendor, add_contacts,
                                                                              task_recorder, run_outbox):
    add_contacts(vendor, {"BR": 2, "KE": 1})
    made = quote(testapp, vendor, {"category": "MARKETING", "audience": {"all": True}})["quotation"]
    assert made["pdf_status"] == "PENDING"
    assert task_recorder == [(GENERATE_PDF, {"vendor_id": vendor.vendor_id, "quotation_id": uuid.UUID(made["id"])})]

    waiting = testapp.get(f"/v1/quotations/{made['id']}/pdf", headers=vendor.headers, status=409).json["error"]
    assert (waiting["code"], waiting["details"]["pdf_status"]) == ("pdf_not_ready", "PENDING")

    run_outbox()

    assert testapp.get(f"/v1/quotations/{made['id']}", headers=vendor.headers).json["quotation"]["pdf_status"] == (
        "READY")
    response = testapp.get(f"/v1/quotations/{made['id']}/pdf", headers=vendor.headers, status=200)
    assert response.content_type == "application/pdf"
    text = pdf_text(response.body)
    for expected in ("Pricing Co", "Kloyst Test Issuer Ltd", "Brazil", "Kenya", "Rest of Africa", "$0.0625", "$0.13",
                     "$0.0225", "Total (USD)", "$0.15", "1 July 2025", "Valid until"):
        assert expected in text, expected
    assert made["id"] not in text and made["snapshot_id"] not in text
    assert response.headers["Content-Disposition"].startswith('attachment; filename="quotation-Q-')


def test_a_pdf_that_cannot_be_rendered_ends_failed_with_its_reason(testapp, vendor, add_contacts, task_recorder,
                                                                   run_outbox, monkeypatch):
    add_contacts(vendor, {"BR": 1})
    made = quote(testapp, vendor, {"category": "MARKETING", "audience": {"all": True}})["quotation"]

    def broken(*args, **kwargs):
        raise RuntimeError("font missing")

    monkeypatch.setattr(pdf_module, "render", broken)
    run_outbox()

    answer = testapp.get(f"/v1/quotations/{made['id']}", headers=vendor.headers).json["quotation"]
    assert (answer["pdf_status"], answer["pdf_error"]) == ("FAILED", "RuntimeError: font missing")
    error = testapp.get(f"/v1/quotations/{made['id']}/pdf", headers=vendor.headers, status=409).json["error"]
    assert error["details"]["pdf_status"] == "FAILED"


def test_a_deployment_without_an_issuer_gets_failed_pdfs_saying_what_to_set_in_one_line(
        testapp, registry, vendor, add_contacts, task_recorder, run_outbox, monkeypatch, caplog):
    monkeypatch.setitem(registry.settings, "pricing.issuer_name", "")
    add_contacts(vendor, {"BR": 1})
    made = quote(testapp, vendor, {"category": "MARKETING", "audience": {"all": True}})["quotation"]

    run_outbox()

    answer = testapp.get(f"/v1/quotations/{made['id']}", headers=vendor.headers).json["quotation"]
    assert answer["pdf_status"] == "FAILED" and "PRICING_ISSUER_NAME" in answer["pdf_error"]
    said = [record for record in caplog.records if "no PDF" in record.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None  # one line, no traceback


def test_the_pdf_task_marks_generating_before_it_renders(testapp, db, vendor, add_contacts, task_recorder,
                                                         run_outbox, monkeypatch):
    add_contacts(vendor, {"BR": 1})
    made = quote(testapp, vendor, {"category": "MARKETING", "audience": {"all": True}})["quotation"]
    seen = []
    real = pdf_module.render

    def watching(quotation, *args):
        seen.append(quotation.pdf_status)
        return real(quotation, *args)

    monkeypatch.setattr(pdf_module, "render", watching)
    run_outbox()

    assert seen == ["GENERATING"]
    assert testapp.get(f"/v1/quotations/{made['id']}", headers=vendor.headers).json["quotation"]["pdf_status"] == (
        "READY")


def test_rates_for_a_country_show_every_category_its_tiers_and_the_vendors_price(testapp, vendor, fee_rule):
    fee_rule(markup_micropercent=10_000_000)

    answer = testapp.get("/v1/pricing/rates?country=in", headers=vendor.headers).json

    assert (answer["country"], answer["market"], answer["currency"]) == ("IN", "India", "USD")
    assert answer["rates"]["UTILITY"] == "0.001400"
    assert answer["rates"]["AUTHENTICATION_INTERNATIONAL"] == "0.028000"
    assert answer["tiers"]["UTILITY"][1] == {"from": 100_001, "to": 500_000, "rate": "0.001330",
                                             "discount_percent": "-5"}
    assert answer["your_unit_price"]["UTILITY"] == "0.001540"
    assert testapp.get("/v1/pricing/rates?country=ZZ", headers=vendor.headers).json["market"] == "Other"


def test_every_pricing_route_is_404_for_a_vendor_without_the_plugin(testapp, accounts, enable_plugin, card):
    without = accounts.vendor("Without")
    enable_plugin(without, "contacts")
    enable_plugin(without, "wallet")
    for path in ("/v1/pricing/rates?country=BR", "/v1/quotations", f"/v1/quotations/{uuid.uuid4()}",
                 f"/v1/quotations/{uuid.uuid4()}/pdf"):
        assert testapp.get(path, headers=without.headers, status=404).json["error"]["code"] == "not_found"
    testapp.post_json("/v1/quotations", {"category": "MARKETING", "audience": {"all": True}},
                      headers=without.headers, status=404)


def test_the_plugins_hooks_are_all_kloyst_hookspecs(registry):
    pm = registry["kloyst.plugin_manager"]
    hooks = {caller.name for caller in pm.get_hookcallers(pm.get_plugin("pricing"))}
    assert all(hasattr(hookspecs, hook) for hook in hooks)
    assert {"kloyst_pricing_rules", "kloyst_routes", "kloyst_tasks", "kloyst_settings",
            "kloyst_cli_commands", "kloyst_demo_data"} <= hooks


def test_the_platform_fees_come_through_the_tenant_hook_only_for_vendors_with_pricing(registry):
    pm = registry["kloyst.plugin_manager"]
    with_pricing = pm.for_plugins("kloyst_pricing_rules", ["pricing"])()
    without = pm.for_plugins("kloyst_pricing_rules", ["contacts"])()
    assert [rule.name for result in with_pricing for rule in result] == ["platform_fees"]
    assert without == []


def test_rates_without_a_country_list_the_whole_card_in_force(testapp, vendor, card):
    answer = testapp.get("/v1/pricing/rates", headers=vendor.headers).json

    assert (answer["currency"], answer["snapshot"]["id"]) == ("USD", str(card.id))
    assert answer["markets"]["Other"]["MARKETING"] == "0.060400"
    assert len(answer["markets"]) == 32
