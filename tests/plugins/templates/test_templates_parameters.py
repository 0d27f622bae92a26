"""Template variables: parsed from components, checked before a send, built into Meta's payload."""

from __future__ import annotations

import pytest

from kloyst_plugins.templates import parameters
from kloyst_plugins.templates.parameters import TemplateParameterError, build_payload, validate_send
from templates_support import make


POSITIONAL = make([{"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
                   {"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships on {{3}}."}])
NAMED = make([{"type": "HEADER", "format": "TEXT", "text": "Hello {{first_name}}"},
              {"type": "BODY", "text": "Your code {{code}} expires {{ when }}. Bye {{first_name}}."}],
             parameter_format="NAMED")


def problems_of(template, **values) -> list[str]:
    with pytest.raises(TemplateParameterError) as caught:
        validate_send(template, **values)
    return caught.value.problems


def test_positional_variables_are_parsed_per_component_in_number_order():
    template = make([{"type": "HEADER", "format": "TEXT", "text": "{{1}}"},
                     {"type": "BODY", "text": "{{2}} then {{1}} then {{2}} again"}])
    assert template.header_variables == ["1"]
    assert template.body_variables == ["1", "2"]


def test_named_variables_are_parsed_once_each_in_order_of_appearance():
    assert NAMED.header_variables == ["first_name"]
    assert NAMED.body_variables == ["code", "when", "first_name"]


def test_a_media_header_has_no_text_variables_and_types_are_read_case_insensitively():
    template = make([{"type": "header", "format": "IMAGE", "example": {"header_handle": ["h"]}},
                     {"type": "body", "text": "See {{1}}"}])
    assert template.header_variables == []
    assert template.body_variables == ["1"]


def test_url_button_variables_are_found_by_button_index():
    components = [{"type": "BODY", "text": "Hi"},
                  {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Stop"},
                                                  {"type": "URL", "text": "Track", "url": "https://x.test/t/{{1}}"},
                                                  {"type": "URL", "text": "Home", "url": "https://x.test/"}]}]
    assert parameters.button_variables(components) == {1: ["1"]}


def test_a_send_that_fits_passes():
    validate_send(POSITIONAL, header=["A-1"], body=["Ann", "A-1", "Monday"])
    validate_send(NAMED, header={"first_name": "Ann"}, body={"code": "1234", "when": "soon", "first_name": "Ann"})


def test_too_few_positional_parameters_says_expected_and_given():
    problems = problems_of(POSITIONAL, header=["A-1"], body=["Ann", "A-1"])
    assert problems == ["body: expected 3 parameters ({{1}}, {{2}}, {{3}}), got 2"]


def test_too_many_positional_parameters_says_expected_and_given():
    assert problems_of(POSITIONAL, header=["A-1", "extra"], body=["a", "b", "c"]) == [
        "header: expected 1 parameters ({{1}}), got 2"]


def test_missing_and_unknown_named_parameters_are_named():
    problems = problems_of(NAMED, header={"first_name": "Ann"}, body={"code": "1", "colour": "red"})
    assert "body: missing named parameters: when, first_name" in problems
    assert any(p.startswith("body: unknown named parameters: colour") for p in problems)


def test_named_values_for_a_positional_template_are_refused():
    problems = problems_of(POSITIONAL, header=["A-1"], body={"name": "Ann"})
    assert problems == ["body: this template uses positional parameters ({{1}}, {{2}}, {{3}}); send a list of 3 "
                        "values, not named ones"]


def test_a_list_for_a_named_template_is_refused():
    problems = problems_of(NAMED, header={"first_name": "Ann"}, body=["1234", "soon", "Ann"])
    assert problems == ["body: this template uses named parameters (code, when, first_name); send them by name, "
                        "not as a list"]


@pytest.mark.parametrize("empty", ["", "   ", None, {"type": "text", "text": ""}])
def test_empty_values_are_refused_naming_the_variable(empty):
    assert problems_of(POSITIONAL, header=["A-1"], body=["Ann", empty, "Monday"]) == ["body parameter {{2}} is empty"]
    named = {"code": "1", "when": empty, "first_name": "Ann"}
    assert problems_of(NAMED, header={"first_name": "Ann"}, body=named) == ["body parameter when is empty"]


def test_values_with_new_lines_are_refused_as_meta_would():
    problems = problems_of(POSITIONAL, header=["A-1"], body=["Ann\nSmith", "A-1", "Monday"])
    assert problems == ["body parameter {{1}} has a new line, a tab or more than 4 spaces in a row, which Meta "
                        "refuses"]


def test_parameters_for_a_template_without_variables_are_refused():
    plain = make([{"type": "BODY", "text": "Thanks!"}])
    validate_send(plain)
    assert problems_of(plain, body=["x"]) == ["body: the template's body has no variables; send no body parameters"]


def test_a_string_instead_of_a_list_is_refused():
    assert problems_of(POSITIONAL, header="A-1", body=["a", "b", "c"]) == [
        "header: parameters are a list (positional) or an object (named), not a string"]


def test_every_problem_is_reported_at_once():
    assert len(problems_of(POSITIONAL, header=[], body=["only one"])) == 2


def test_a_media_header_needs_one_media_parameter_of_its_type():
    template = make([{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "Hi"}])
    validate_send(template, header=[{"type": "image", "image": {"link": "https://x.test/a.png"}}])
    assert problems_of(template)[0].startswith("header: the template has a IMAGE header; send exactly one image")
    assert problems_of(template, header=[{"type": "video", "video": {"link": "https://x.test/a.mp4"}}])[0].startswith(
        "header: the template has a IMAGE header; its parameter must be")


def test_url_buttons_with_a_variable_need_their_value():
    template = make([{"type": "BODY", "text": "Track it"},
                     {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Stop"},
                                                     {"type": "URL", "text": "Go", "url": "https://x.test/{{1}}"}]}])
    validate_send(template, buttons=[{"sub_type": "url", "index": 1, "parameters": ["abc"]}])
    assert problems_of(template)[0].startswith("button 1: its URL needs a value for {{1}}")
    assert problems_of(template, buttons=[{"sub_type": "url", "index": 1, "parameters": []}]) == [
        "button 1: its URL needs exactly one value for {{1}}"]
    assert problems_of(template, buttons=[{"sub_type": "url", "index": "1", "parameters": ["a"]},
                                          {"sub_type": "url", "index": 5, "parameters": ["a"]}]) == [
        "button 5: the template has 2 buttons (index 0 to 1)"]
    assert problems_of(template, buttons=[{"sub_type": "url", "index": 0, "parameters": ["a"]},
                                          {"sub_type": "url", "index": 1, "parameters": ["a"]}]) == [
        "button 0: the template's button 0 is a QUICK_REPLY button; use sub_type 'quick_reply', not 'url'"]


def test_build_payload_gives_metas_positional_template_message():
    payload = build_payload(POSITIONAL, "447400123456", header=["A-1"], body=["Ann", "A-1", "Monday"],
                            biz_opaque_callback_data="msg-1")
    assert payload["type"] == "template" and payload["to"] == "447400123456"
    assert payload["biz_opaque_callback_data"] == "msg-1"
    assert payload["template"] == {"name": "order_update", "language": {"code": "en_US"}, "components": [
        {"type": "header", "parameters": [{"type": "text", "text": "A-1"}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-1"},
                                        {"type": "text", "text": "Monday"}]}]}


def test_build_payload_names_named_parameters():
    payload = build_payload(NAMED, "447400123456", header={"first_name": "Ann"},
                            body={"code": "1234", "when": "soon", "first_name": "Ann"})
    body = payload["template"]["components"][1]
    assert body["parameters"][0] == {"type": "text", "text": "1234", "parameter_name": "code"}


def test_build_payload_refuses_before_building_anything():
    with pytest.raises(TemplateParameterError):
        build_payload(POSITIONAL, "447400123456", body=["Ann"])


def test_a_parameter_error_is_a_value_error_that_becomes_a_422():
    error = TemplateParameterError(["body: expected 3 parameters, got 1"])
    assert isinstance(error, ValueError)
    api_error = error.as_api_error()
    assert api_error.status == 422
    assert api_error.details == {"fields": [{"field": "parameters", "problem": "body: expected 3 parameters, got 1"}]}
