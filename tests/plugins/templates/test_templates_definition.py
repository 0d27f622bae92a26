"""A definition Meta would refuse is caught before submission, every problem at once, each naming its place."""

from __future__ import annotations

import pytest

from kloyst_plugins.templates.definition import check

BODY = {"type": "BODY", "text": "Hi {{1}}, order {{2}} is ready.", "example": {"body_text": [["Ann", "A-1"]]}}


def problems(components, *, category="UTILITY", parameter_format="POSITIONAL") -> list[dict]:
    return check(category, parameter_format, components)


def test_a_complete_positional_definition_has_no_problems():
    assert problems([{"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["A-1"]}},
                     BODY, {"type": "FOOTER", "text": "Reply STOP to opt out"},
                     {"type": "BUTTONS", "buttons": [
                         {"type": "URL", "text": "Track", "url": "https://x.test/t/{{1}}",
                          "example": ["https://x.test/t/A-1"]},
                         {"type": "QUICK_REPLY", "text": "Stop"}]}]) == []


def test_a_complete_named_definition_has_no_problems():
    body = {"type": "BODY", "text": "Hi {{first_name}}, code {{code}}",
            "example": {"body_text_named_params": [{"param_name": "first_name", "example": "Ann"},
                                                   {"param_name": "code", "example": "1234"}]}}
    header = {"type": "HEADER", "format": "TEXT", "text": "For {{first_name}}",
              "example": {"header_text_named_params": [{"param_name": "first_name", "example": "Ann"}]}}
    assert problems([header, body], parameter_format="NAMED") == []


def test_the_body_is_required():
    assert problems([{"type": "FOOTER", "text": "bye"}]) == [
        {"field": "components", "problem": "a BODY component is required"}]


def test_a_body_without_text_is_a_problem_except_for_authentication():
    assert problems([{"type": "BODY"}]) == [{"field": "components[0].text", "problem": "text is required"}]
    assert problems([{"type": "BODY", "add_security_recommendation": True}], category="AUTHENTICATION") == []


def test_placeholder_gaps_are_refused_with_the_numbers_found():
    body = {"type": "BODY", "text": "{{1}} and {{3}}", "example": {"body_text": [["a", "b"]]}}
    assert problems([body]) == [{"field": "components[0].text", "problem": "positional placeholders are numbered "
                                 "{{1}}, {{2}} without gaps; found {{1}}, {{3}}"}]


def test_numbering_must_start_at_one():
    body = {"type": "BODY", "text": "{{0}}", "example": {"body_text": [["a"]]}}
    assert "without gaps; found {{0}}" in problems([body])[0]["problem"]


def test_positional_and_named_placeholders_cannot_be_mixed():
    body = {"type": "BODY", "text": "{{1}} and {{name}}", "example": {"body_text": [["a", "b"]]}}
    assert problems([body]) == [{"field": "components[0].text", "problem": "positional ({{1}}) and named "
                                 "({{name}}) placeholders cannot be mixed"}]


def test_named_placeholders_need_the_named_format():
    body = {"type": "BODY", "text": "Hi {{name}}", "example": {"body_text": [["a"]]}}
    assert problems([body])[0]["problem"].startswith("named placeholders ({{name}}) in a POSITIONAL template")
    assert problems([BODY], parameter_format="NAMED")[0]["problem"].startswith(
        "positional placeholders ({{1}}, {{2}}) in a NAMED template")


def test_named_placeholders_are_lowercase():
    body = {"type": "BODY", "text": "Hi {{Name}}",
            "example": {"body_text_named_params": [{"param_name": "Name", "example": "Ann"}]}}
    assert "lowercase letters" in problems([body], parameter_format="NAMED")[0]["problem"]


def test_a_malformed_placeholder_is_a_problem():
    body = {"type": "BODY", "text": "Hi {{first name}}"}
    assert problems([body]) == [{"field": "components[0].text",
                                 "problem": "a placeholder is malformed; write {{1}} or {{first_name}}"}]


@pytest.mark.parametrize("example", [None, {}, {"body_text": [["Ann"]]}, {"body_text": ["Ann", "A-1"]},
                                     {"body_text": [["Ann", ""]]}])
def test_positional_variables_need_one_example_value_each(example):
    body = {"type": "BODY", "text": BODY["text"], **({"example": example} if example is not None else {})}
    assert problems([body]) == [{"field": "components[0].example.body_text",
                                 "problem": "Meta requires an example value for each variable ({{1}}, {{2}}): "
                                            'body_text: [["…", "…"]] with 2 non-empty value(s)'}]


def test_named_variables_need_an_example_each_and_no_strangers():
    body = {"type": "BODY", "text": "Hi {{first_name}}, code {{code}}",
            "example": {"body_text_named_params": [{"param_name": "first_name", "example": "Ann"},
                                                   {"param_name": "colour", "example": "red"}]}}
    found = problems([body], parameter_format="NAMED")
    assert [p["field"] for p in found] == ["components[0].example.body_text_named_params"] * 2
    assert "missing for {{code}}" in found[0]["problem"]
    assert found[1]["problem"] == "examples for variables the text does not use: colour"


def test_a_text_header_has_at_most_one_variable_and_needs_its_example():
    two = {"type": "HEADER", "format": "TEXT", "text": "{{1}} {{2}}", "example": {"header_text": ["a", "b"]}}
    assert {"field": "components[0].text", "problem": "a header has at most one variable"} in problems([two, BODY])
    one = {"type": "HEADER", "format": "TEXT", "text": "For {{1}}"}
    assert problems([one, BODY])[0]["field"] == "components[0].example.header_text"


def test_a_media_header_needs_a_sample_handle():
    header = {"type": "HEADER", "format": "IMAGE"}
    assert problems([header, BODY]) == [{"field": "components[0].example.header_handle",
                                         "problem": "a IMAGE header needs a sample media handle (from Meta's "
                                                    "resumable upload)"}]
    header["example"] = {"header_handle": ["4::aW1hZ2U="]}
    assert problems([header, BODY]) == []


def test_an_unknown_header_format_is_a_problem():
    assert problems([{"type": "HEADER", "format": "GIF"}, BODY])[0]["field"] == "components[0].format"


def test_lengths_follow_metas_limits():
    found = problems([{"type": "HEADER", "format": "TEXT", "text": "h" * 61}, {"type": "BODY", "text": "b" * 1025},
                      {"type": "FOOTER", "text": "f" * 61}])
    assert [p["problem"] for p in found] == ["at most 60 characters (has 61)", "at most 1024 characters (has 1025)",
                                             "at most 60 characters (has 61)"]


def test_a_footer_has_no_variables():
    assert problems([BODY, {"type": "FOOTER", "text": "{{1}}"}]) == [
        {"field": "components[1].text", "problem": "a footer cannot have variables"}]


def test_a_url_button_takes_one_variable_at_the_end_with_an_example():
    def button(url, example=("https://x.test/a",)):
        return [BODY, {"type": "BUTTONS", "buttons": [{"type": "URL", "text": "Go", "url": url,
                                                       **({"example": list(example)} if example else {})}]}]
    assert problems(button("https://x.test/{{1}}/x"))[0]["problem"] == "a URL takes one variable, {{1}}, at its end"
    assert problems(button("https://x.test/{{2}}"))[0]["problem"] == "a URL takes one variable, {{1}}, at its end"
    assert problems(button("https://x.test/{{1}}", example=None))[0]["field"] == "components[1].buttons[0].example"
    assert problems(button("https://x.test/fixed", example=None)) == []


def test_a_second_component_of_the_same_type_is_a_problem():
    assert problems([BODY, BODY]) == [{"field": "components[1].type",
                                       "problem": "a second BODY; components[0] is one already"}]


def test_every_problem_is_reported_at_once():
    found = problems([{"type": "HEADER", "format": "TEXT", "text": "{{1}}"}, {"type": "FOOTER", "text": "{{1}}"}])
    assert len(found) == 3  # header example, footer variable, body missing
