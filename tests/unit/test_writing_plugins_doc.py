"""docs/writing_plugins.md walks through the example plugin's real code, not a copy that drifts.

A code block in the tutorial that shows one of the example's files says so on the line before
its fence, ``<!-- file: examples/kloyst-example-plugin/kloyst_example/plugin.py -->``, and is
then that file's text: the whole file, or excerpts of it in order, separated by a line ``...``.
Every module of the example plugin is shown somewhere, so the tutorial covers all of it. The
example's own tests (examples/kloyst-example-plugin/tests) run that code, the tutorial's whole
case included (test_example_tutorial.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing_plugins.md"
EXAMPLE = ROOT / "examples" / "kloyst-example-plugin"
MARKER = re.compile(r"^<!--\s*file:\s*(\S+)\s*-->$")
ELLIPSIS = "..."


def shown_files(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line number, path, block lines)`` for every block marked with a file."""
    lines = text.splitlines()
    found = []
    for number, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        fence = number + 1
        assert lines[fence].startswith("```"), f"line {number + 1}: a file marker must sit right above a fence"
        end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith("```"))
        found.append((number + 1, match.group(1), lines[fence + 1:end]))
    return found


def excerpt_problems(block: list[str], source: list[str]) -> list[str]:
    """Each ``...``-separated part of ``block`` must be consecutive lines of ``source``, parts in order."""
    parts, part = [], []
    for line in block:
        if line.strip() == ELLIPSIS:
            parts.append(part)
            part = []
        else:
            part.append(line)
    parts.append(part)
    problems, position = [], 0
    for part in (p for p in parts if p):
        at = next((i for i in range(position, len(source) - len(part) + 1) if source[i:i + len(part)] == part), None)
        if at is None:
            problems.append("not in the file (from this point on, in this order): " + part[0].strip())
            continue
        position = at + len(part)
    return problems


SHOWN = shown_files(DOC.read_text(encoding="utf-8"))


def test_the_tutorial_marks_the_blocks_that_show_the_example():
    assert len(SHOWN) >= 8


@pytest.mark.parametrize("shown", SHOWN, ids=lambda s: f"line {s[0]}: {s[1]}")
def test_a_block_that_names_a_file_shows_that_files_code(shown):
    _, path, block = shown
    source = (ROOT / path).read_text(encoding="utf-8").splitlines()
    assert excerpt_problems(block, source) == []


def test_every_module_of_the_example_plugin_is_walked_through():
    modules = {str(p.relative_to(ROOT)) for p in (EXAMPLE / "kloyst_example").rglob("*.py")
               if p.name != "__init__.py" and "__pycache__" not in p.parts}
    shown = {path for _, path, _ in SHOWN}
    assert sorted(modules - shown) == []
    assert (EXAMPLE / "setup.py").relative_to(ROOT).as_posix() in shown


def test_an_excerpt_out_of_order_or_changed_is_caught():
    source = ["a", "b", "c", "d"]
    assert excerpt_problems(["a", "b", ELLIPSIS, "d"], source) == []
    assert excerpt_problems(["c", ELLIPSIS, "a"], source) != []
    assert excerpt_problems(["a", "x"], source) != []
