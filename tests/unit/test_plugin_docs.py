"""docs/plugin_hooks.md documents every hook, with the signature the spec really has (datasette's test_docs.py).

A hook added to ``kloyst/plugins/hookspecs.py`` without a section in the doc, a changed
signature, or a documented hook that was removed all fail here, so plugin authors never
read a signature that is not the code's.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from kloyst.plugins import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"
HOOK_HEADING = re.compile(r"^## `(?P<name>\w+)\((?P<args>[^)]*)\)`\s*$", re.MULTILINE)


def _specs() -> dict[str, object]:
    return {name: func for name, func in vars(hookspecs).items()
            if callable(func) and hasattr(func, "kloyst_spec")}


def _documented() -> dict[str, tuple[str, str]]:
    """``{hook: (args as written in the heading, the section's text)}``."""
    text = (DOCS / "plugin_hooks.md").read_text(encoding="utf-8")
    matches = list(HOOK_HEADING.finditer(text))
    sections = {}
    for match, following in zip(matches, matches[1:] + [None]):
        body = text[match.end(): following.start() if following else len(text)]
        sections[match["name"]] = (match["args"], body)
    return sections


SPECS = _specs()
DOCUMENTED = _documented()


def test_the_hookspec_module_declares_hooks_to_document():
    assert len(SPECS) >= 7, sorted(SPECS)


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_every_hook_is_documented(hook):
    assert hook in DOCUMENTED, f"{hook} has no '## `{hook}(...)`' section in docs/plugin_hooks.md"


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_documented_signature_is_the_specs_signature(hook):
    if hook not in DOCUMENTED:
        pytest.skip("reported by test_every_hook_is_documented")
    expected = str(inspect.signature(SPECS[hook])).strip("()")
    written = DOCUMENTED[hook][0]
    assert written == expected, f"docs/plugin_hooks.md says {hook}({written}); the spec is {hook}({expected})"


def test_the_doc_documents_no_hook_that_does_not_exist():
    assert sorted(set(DOCUMENTED) - set(SPECS)) == []


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_documented_firstresult_matches_the_spec(hook):
    if hook not in DOCUMENTED:
        pytest.skip("reported by test_every_hook_is_documented")
    firstresult = SPECS[hook].kloyst_spec.get("firstresult", False)
    line = re.search(r"\*\*firstresult:\*\* (yes|no)", DOCUMENTED[hook][1])
    assert line, f"the {hook} section does not say whether it is firstresult"
    assert (line.group(1) == "yes") == firstresult


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_documented_kind_matches_the_specs_docstring(hook):
    if hook not in DOCUMENTED:
        pytest.skip("reported by test_every_hook_is_documented")
    kind = re.search(r"\*\*Kind:\*\* (configuration|tenant)", DOCUMENTED[hook][1])
    assert kind, f"the {hook} section does not say whether it is a configuration or a tenant hook"
    is_tenant = "tenant hook" in inspect.getdoc(SPECS[hook])
    assert kind.group(1) == ("tenant" if is_tenant else "configuration")
