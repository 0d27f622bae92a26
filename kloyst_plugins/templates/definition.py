"""Checks on a template before it is submitted to Meta, so a definition Meta would refuse never leaves.

Meta's review answers a malformed definition with one generic "invalid parameter" at a time;
checked here, the client gets every problem at once, each naming its place in the request
(``components[1].example.body_text``). Only rules Meta documents are applied: a BODY is
required; placeholders are all positional (numbered 1..n without gaps, per component) or all
named (as ``parameter_format`` says); a TEXT header has at most one variable; every variable
has an example value; a URL button's single variable ends its URL; Meta's length limits.
Anything this module does not know (new component or button types) is left to Meta.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from kloyst_plugins.templates.models import ParameterFormat, TemplateCategory
from kloyst_plugins.templates.parameters import MEDIA_FORMATS, PLACEHOLDER, is_positional, placeholders

BODY_MAX = 1024
HEADER_MAX = 60
FOOTER_MAX = 60
MAX_BUTTONS = 10
HEADER_FORMATS = ("TEXT", *MEDIA_FORMATS)
NAMED_VARIABLE = re.compile(r"^[a-z][a-z0-9_]*$")


def _problem(field: str, problem: str) -> dict[str, str]:
    return {"field": field, "problem": problem}


def _braces(names: Sequence[str]) -> str:
    return ", ".join("{{" + n + "}}" for n in names)


def _malformed(text: str) -> bool:
    """Braces left once every well-formed placeholder is removed: ``{{first name}}``, ``{{1}``, ``{{}}``."""
    rest = PLACEHOLDER.sub("", text)
    return "{{" in rest or "}}" in rest


def _text_problems(where: str, text: Any, limit: int, *, required: bool = True) -> list[dict]:
    if text is None and not required:
        return []
    if not isinstance(text, str) or not text.strip():
        return [_problem(f"{where}.text", "text is required")]
    problems = []
    if len(text) > limit:
        problems.append(_problem(f"{where}.text", f"at most {limit} characters (has {len(text)})"))
    if _malformed(text):
        problems.append(_problem(f"{where}.text", "a placeholder is malformed; write {{1}} or {{first_name}}"))
    return problems


def _numbering_problems(where: str, variables: list[str]) -> list[dict]:
    numbers = sorted(int(v) for v in variables if is_positional(v))
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        expected = [str(n) for n in range(1, len(numbers) + 1)]
        return [_problem(f"{where}.text", f"positional placeholders are numbered {_braces(expected)} without gaps; "
                                          f"found {_braces([str(n) for n in numbers])}")]
    return []


def _format_problems(where: str, variables: list[str], parameter_format: str) -> list[dict]:
    positional = [v for v in variables if is_positional(v)]
    named = [v for v in variables if not is_positional(v)]
    if positional and named:
        return [_problem(f"{where}.text", f"positional ({_braces(positional)}) and named ({_braces(named)}) "
                                          "placeholders cannot be mixed")]
    if named and parameter_format == ParameterFormat.POSITIONAL.value:
        return [_problem(f"{where}.text", f"named placeholders ({_braces(named)}) in a POSITIONAL template; use "
                                          "{{1}}, {{2}}… or set parameter_format to NAMED")]
    if positional and parameter_format == ParameterFormat.NAMED.value:
        return [_problem(f"{where}.text", f"positional placeholders ({_braces(positional)}) in a NAMED template; "
                                          "use names such as {{first_name}} or set parameter_format to POSITIONAL")]
    bad = [v for v in named if not NAMED_VARIABLE.match(v)]
    if bad:
        return [_problem(f"{where}.text", f"placeholder names use lowercase letters, digits and underscores and "
                                          f"start with a letter: {_braces(bad)}")]
    return _numbering_problems(where, variables)


def _positional_examples(where: str, example: Any, key: str, variables: list[str], nested: bool) -> list[dict]:
    field = f"{where}.example.{key}"
    values = example.get(key) if isinstance(example, Mapping) else None
    if nested:  # body_text is [[v1, v2, …]]: one set of examples
        values = values[0] if isinstance(values, list) and len(values) == 1 else None
    shape = '[["…", "…"]]' if nested else '["…"]'
    if not isinstance(values, list) or len(values) != len(variables) or not all(
            isinstance(v, str) and v.strip() for v in values):
        return [_problem(field, f"Meta requires an example value for each variable ({_braces(variables)}): "
                                f"{key}: {shape} with {len(variables)} non-empty value(s)")]
    return []


def _named_examples(where: str, example: Any, key: str, variables: list[str]) -> list[dict]:
    field = f"{where}.example.{key}"
    items = example.get(key) if isinstance(example, Mapping) else None
    given: dict[str, Any] = {}
    if isinstance(items, list):
        given = {i.get("param_name"): i.get("example") for i in items if isinstance(i, Mapping)}
    problems = []
    missing = [v for v in variables if not (isinstance(given.get(v), str) and given[v].strip())]
    if missing:
        problems.append(_problem(field, f"Meta requires an example for each variable; missing for "
                                        f"{_braces(missing)}: give {key}: [{{\"param_name\": \"{missing[0]}\", "
                                        "\"example\": \"…\"}]"))
    expected = set(variables)
    if unknown := [str(n) for n in given if n not in expected]:
        problems.append(_problem(field, f"examples for variables the text does not use: {', '.join(unknown)}"))
    return problems


def _variable_problems(where: str, item: Mapping, parameter_format: str, part: str) -> list[dict]:
    variables = placeholders(item.get("text"))
    if not variables:
        return []
    problems = _format_problems(where, variables, parameter_format)
    if problems:
        return problems
    if parameter_format == ParameterFormat.NAMED.value:
        return _named_examples(where, item.get("example"), f"{part}_text_named_params", variables)
    return _positional_examples(where, item.get("example"), f"{part}_text", variables, nested=part == "body")


def _header_problems(where: str, item: Mapping, parameter_format: str) -> list[dict]:
    fmt = str(item.get("format") or "").upper()
    if fmt not in HEADER_FORMATS:
        return [_problem(f"{where}.format", f"format is one of {', '.join(HEADER_FORMATS)}")]
    if fmt != "TEXT":
        handle = item.get("example", {}).get("header_handle") if isinstance(item.get("example"), Mapping) else None
        if fmt != "LOCATION" and not (isinstance(handle, list) and handle):
            return [_problem(f"{where}.example.header_handle", f"a {fmt} header needs a sample media handle "
                                                                "(from Meta's resumable upload)")]
        return []
    problems = _text_problems(where, item.get("text"), HEADER_MAX)
    if len(placeholders(item.get("text"))) > 1:
        problems.append(_problem(f"{where}.text", "a header has at most one variable"))
    return problems or _variable_problems(where, item, parameter_format, "header")


def _button_problems(where: str, item: Mapping) -> list[dict]:
    buttons = item.get("buttons")
    if not isinstance(buttons, list) or not buttons:
        return [_problem(f"{where}.buttons", "a BUTTONS component lists at least one button")]
    if len(buttons) > MAX_BUTTONS:
        return [_problem(f"{where}.buttons", f"at most {MAX_BUTTONS} buttons")]
    problems = []
    for index, button in enumerate(buttons):
        place = f"{where}.buttons[{index}]"
        if not isinstance(button, Mapping):
            problems.append(_problem(place, "a button is an object with a type"))
            continue
        if str(button.get("type", "")).upper() != "URL":
            continue
        url = button.get("url")
        if not isinstance(url, str) or not url.strip():
            problems.append(_problem(f"{place}.url", "a URL button needs its url"))
            continue
        variables = placeholders(url)
        if not variables:
            continue
        if variables != ["1"] or not url.rstrip().endswith("}}") or len(PLACEHOLDER.findall(url)) != 1:
            problems.append(_problem(f"{place}.url", "a URL takes one variable, {{1}}, at its end"))
            continue
        example = button.get("example")
        if not (isinstance(example, list) and len(example) == 1 and isinstance(example[0], str)
                and example[0].strip()):
            problems.append(_problem(f"{place}.example", 'Meta requires an example of the full URL: ["https://…"]'))
    return problems


def check(category: str, parameter_format: str, components: Sequence[Any]) -> list[dict[str, str]]:
    """Every problem with a definition, as ``{"field", "problem"}``; empty when it can be submitted."""
    problems: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    authentication = category == TemplateCategory.AUTHENTICATION.value
    for index, item in enumerate(components):
        where = f"components[{index}]"
        kind = str(item.get("type", "")).upper() if isinstance(item, Mapping) else ""
        if not kind:
            problems.append(_problem(f"{where}.type", "each component has a type (HEADER, BODY, FOOTER, BUTTONS…)"))
            continue
        if kind in seen:
            problems.append(_problem(f"{where}.type", f"a second {kind}; components[{seen[kind]}] is one already"))
            continue
        seen[kind] = index
        if kind == "BODY":
            # Variables are read only from a text within its limit: an oversized text is refused before any loop.
            problems += (_text_problems(where, item.get("text"), BODY_MAX, required=not authentication)
                         or _variable_problems(where, item, parameter_format, "body"))
        elif kind == "HEADER":
            problems += _header_problems(where, item, parameter_format)
        elif kind == "FOOTER":
            problems += _text_problems(where, item.get("text"), FOOTER_MAX, required=not authentication)
            if placeholders(item.get("text")):
                problems.append(_problem(f"{where}.text", "a footer cannot have variables"))
        elif kind == "BUTTONS":
            problems += _button_problems(where, item)
    if "BODY" not in seen:
        problems.append(_problem("components", "a BODY component is required"))
    return problems
