"""Variable mappings: template variables filled from a contact's fields, with defaults and literal values."""

from __future__ import annotations

import pytest

from kloyst_plugins.templates.parameters import TemplateParameterError, check_mapping, resolve_variables
from templates_support import make

POSITIONAL = make([{"type": "HEADER", "format": "TEXT", "text": "For {{1}}"},
                   {"type": "BODY", "text": "Hi {{1}}, your tier is {{2}}. Call {{3}}."}])
NAMED = make([{"type": "BODY", "text": "Hi {{first_name}} from {{country}}"}], parameter_format="NAMED")
ANN = {"name": "Ann", "mobile": "+447400123456", "country": "GB", "attributes": {"tier": "gold", "vip": True}}


def test_fields_defaults_and_literals_fill_a_positional_template_in_order():
    mapping = {"1": {"field": "name"}, "2": {"field": "attributes.tier", "default": "standard"},
               "3": {"value": "0800 123"}, "header.1": {"field": "mobile"}}
    resolved = resolve_variables(POSITIONAL, mapping, ANN)
    assert resolved.body == ["Ann", "gold", "0800 123"]
    assert resolved.header == ["+447400123456"]


def test_a_missing_contact_field_takes_the_default():
    mapping = {"1": {"field": "name", "default": "there"}, "2": {"field": "attributes.tier", "default": "standard"},
               "3": {"value": "0800"}, "header.1": {"field": "country", "default": "you"}}
    resolved = resolve_variables(POSITIONAL, mapping, {"name": "  ", "mobile": "+1", "attributes": {}})
    assert resolved.body == ["there", "standard", "0800"]
    assert resolved.header == ["you"]


def test_a_named_template_resolves_to_named_values():
    mapping = {"first_name": {"field": "name"}, "country": {"field": "country"}}
    resolved = resolve_variables(NAMED, mapping, ANN)
    assert resolved.body == {"first_name": "Ann", "country": "GB"}
    assert resolved.header is None


def test_a_value_that_is_not_text_is_written_as_text():
    template = make([{"type": "BODY", "text": "VIP: {{1}}"}])
    assert resolve_variables(template, {"1": {"field": "attributes.vip"}}, ANN).body == ["true"]


def test_a_variable_without_value_or_default_is_an_error_naming_it():
    mapping = {"1": {"field": "name"}, "2": {"field": "attributes.tier"}, "3": {"value": "x"},
               "header.1": {"field": "name"}}
    with pytest.raises(TemplateParameterError) as caught:
        resolve_variables(POSITIONAL, mapping, {"name": "Bo", "attributes": {}})
    assert caught.value.problems == [
        "body variable {{2}}: the contact has no attributes.tier and the mapping gives no default"]


def test_an_unmapped_variable_is_an_error_naming_it():
    with pytest.raises(TemplateParameterError) as caught:
        resolve_variables(NAMED, {"first_name": {"field": "name"}}, ANN)
    assert caught.value.problems == ["body variable {{country}} has no mapping; map it to a contact field or a value"]


def test_the_sends_mapping_overrides_the_stored_one_key_by_key():
    template = make([{"type": "BODY", "text": "Hi {{1}}, {{2}}"}])
    template.variable_mapping = {"1": {"field": "name"}, "2": {"value": "stored"}}
    assert resolve_variables(template, None, ANN).body == ["Ann", "stored"]
    assert resolve_variables(template, {"2": {"value": "given"}}, ANN).body == ["Ann", "given"]


def test_a_bad_mapping_given_with_a_send_is_refused_before_resolving():
    with pytest.raises(TemplateParameterError) as caught:
        resolve_variables(NAMED, {"first_name": {"field": "email"}, "country": {"field": "country"}}, ANN)
    assert caught.value.problems[0].startswith("first_name: field 'email' is not a contact field")


@pytest.mark.parametrize(("mapping", "problem"), [
    ({"4": {"field": "name"}}, "'4' is not a variable of this template (its variables: 1, 2, 3, header.1)"),
    ({"1": "name"}, '1: map to {"field": "name", "default": "…"} or {"value": "…"}'),
    ({"1": {"default": "x"}}, '1: give "field" (a contact field) or "value" (literal text)'),
    ({"1": {"field": "name", "value": "x"}}, "1: a literal {\"value\": …} takes no field or default"),
    ({"1": {"value": " "}}, "1: value is non-empty text"),
    ({"1": {"field": "name", "default": ""}}, "1: default is non-empty text (leave it out to require a value)"),
    ({"1": {"field": "name", "fallback": "x"}}, "1: unknown keys fallback; a field mapping has field and default"),
    ({"1": {"field": "attributes."}}, "1: field 'attributes.' is not a contact field: use name, mobile, country or "
                                      "attributes.<name>"),
    ([], 'the variable mapping is an object {variable: {"field": …} or {"value": …}}'),
])
def test_each_mapping_problem_says_what_to_fix(mapping, problem):
    assert check_mapping(POSITIONAL, mapping) == [problem]


def test_a_partial_mapping_is_acceptable_to_store():
    assert check_mapping(POSITIONAL, {"1": {"field": "name", "default": "there"}}) == []
