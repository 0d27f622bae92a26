"""What the messages plugin calls before a send: find the approved template, check and build its payload."""

from __future__ import annotations

import pytest
from templates_support import WABA_ID, body_component, task_context

from kloyst_plugins.templates import parameters, services


def test_an_approved_template_is_found_by_waba_name_and_language(registry, vendor, stored_template):
    stored = stored_template(vendor, "order_ready", [body_component("Hi {{1}}")])
    stored_template(vendor, "order_ready", [body_component("Hola {{1}}")], language="es")
    with task_context(registry, vendor.vendor_id) as ctx:
        template = services.find_sendable(ctx.db, WABA_ID, "order_ready", "en_US")
        assert template.id == stored.id
        payload = parameters.build_payload(template, "447400123456", body=["Ann"])
        assert payload["template"]["components"] == [{"type": "body", "parameters": [{"type": "text",
                                                                                       "text": "Ann"}]}]


@pytest.mark.parametrize(("name", "language", "waba"), [("missing", "en_US", WABA_ID), ("order_ready", "fr", WABA_ID),
                                                        ("order_ready", "en_US", "1")])
def test_an_unknown_template_is_a_404_saying_what_to_check(registry, vendor, stored_template, name, language, waba):
    stored_template(vendor, "order_ready", [body_component("Hi")])
    with task_context(registry, vendor.vendor_id) as ctx, pytest.raises(services.TemplateNotFound) as caught:
        services.find_sendable(ctx.db, waba, name, language)
    assert caught.value.status == 404 and "sync templates" in caught.value.message


@pytest.mark.parametrize("status", ["PENDING", "REJECTED", "PAUSED", "DISABLED", "DELETED"])
def test_a_template_that_is_not_approved_is_refused_naming_its_status(registry, vendor, stored_template, status):
    stored_template(vendor, "order_ready", [body_component("Hi")], status=status)
    with task_context(registry, vendor.vendor_id) as ctx, pytest.raises(services.TemplateNotSendable) as caught:
        services.find_sendable(ctx.db, WABA_ID, "order_ready", "en_US")
    assert caught.value.status == 422 and caught.value.code == "template_not_approved"
    assert f"is {status}; only APPROVED templates can be sent" in caught.value.message


def test_another_vendors_template_is_not_found(registry, vendor, accounts, stored_template):
    other = accounts.vendor("Other")
    stored_template(other, "theirs", [body_component("Hi")])
    with task_context(registry, vendor.vendor_id) as ctx, pytest.raises(services.TemplateNotFound):
        services.find_sendable(ctx.db, WABA_ID, "theirs", "en_US")
