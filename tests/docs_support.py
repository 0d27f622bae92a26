"""The shell blocks of README.md and docs/*.md, as a reader runs them, and the conventions that make them runnable.

The conventions (README.md, "Two commands", says them to readers too):

- A fenced ``sh``, ``bash``, ``shell`` or ``console`` block that calls ``curl`` or runs a
  ``kloyst`` command is **run** by ``tests/e2e/test_docs_executed.py``, against a fresh
  ``kloyst run`` of development.ini, in document order: README.md first, then docs/*.md by
  name. The blocks are one shell session: a block sets the variables later blocks use, as a
  reader's terminal would (``TOKEN=$(curl … | jq -r .access_token)``).
- Every HTTP call such a block makes must answer 2xx, and a JSON answer must fit the
  OpenAPI document. A ```json block right after a run block shows (part of) the answer to its
  last call: every field shown must be in the answer with that value, ``"…"`` standing for any
  value and a list standing for its first elements.
- A block that cannot run here (it needs the staging server, a real Meta account, Docker)
  says so on the line before its fence: ``<!-- not-run: the staging server -->``. Sparingly.
- A run block names no placeholders (``<id>``): a reader cannot type them into a shell, so the
  block sets a variable instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^```([\w-]*)\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(.*?)\s*-->$")
# curl or kloyst as a command: at the start of a line or after a separator, or as a path (.venv/bin/kloyst).
_COMMAND = re.compile(r"(^|[\s;|&(/]|\$\()(curl|kloyst)\s", re.MULTILINE)
# NAME=… at the start of a command: of a line, after ; && ||, or after until/while/if/then/do/else.
_ASSIGNMENT = re.compile(r"(?:^\s*|(?:;|&&|\|\|)\s*|\b(?:until|while|if|then|do|else)\s+)(?:export\s+)?([A-Za-z_]\w*)=",
                         re.MULTILINE)
# <id>, <the password>: a placeholder. Not a redirection (`< file`, `<<EOF`) nor a comparison in a test.
_PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")
ANY = "…"


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    document: str  # relative to the repository: README.md, docs/imports.md
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    not_run: str | None  # the reason given by <!-- not-run: … -->, if any
    answer: str | None  # the ```json block right after it, if any

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    @property
    def calls_the_api_or_cli(self) -> bool:
        return bool(_COMMAND.search(_without_comments(self.text)))

    @property
    def runs(self) -> bool:
        """Run by the executed-docs test: a shell block with a curl or kloyst command, not marked not-run."""
        return self.is_shell and self.calls_the_api_or_cli and self.not_run is None

    def placeholders(self) -> list[str]:
        return _PLACEHOLDER.findall(_without_comments(self.text))

    def assigned_variables(self) -> list[str]:
        return list(dict.fromkeys(_ASSIGNMENT.findall(_without_comments(self.text))))


def _without_comments(text: str) -> str:
    """The block without ``# …`` comments (outside quotes, good enough for documentation)."""
    lines = []
    for line in text.splitlines():
        quote = None
        for index, char in enumerate(line):
            if quote:
                quote = None if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#" and (index == 0 or line[index - 1] in " \t"):
                line = line[:index]
                break
        lines.append(line)
    return "\n".join(lines)


def documents() -> list[Path]:
    """README.md, then docs/*.md by name: the order a reader (and the executed test) takes them in."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with its not-run reason and the answer shown after it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(ROOT).as_posix()
    found: list[tuple[int, str, str, str | None]] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        start, language, body = index, opening.group(1).lower(), []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        before = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marker = _NOT_RUN.match(before)
        found.append((start, language, "\n".join(body), marker.group(1) if marker else None))
        index += 1
    result = []
    for position, (start, language, text, not_run) in enumerate(found):
        answer = None
        if position + 1 < len(found) and found[position + 1][1] == "json":
            end = _closing_fence(lines, start)
            following = found[position + 1][0]
            if all(not line.strip() for line in lines[end + 1:following]):
                answer = found[position + 1][2]
        result.append(Block(name, start + 1, language, text, not_run, answer))
    return result


def _closing_fence(lines: list[str], start: int) -> int:
    index = start + 1
    while lines[index].strip() != "```":
        index += 1
    return index


def every_block() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]


def shown_answer_mismatches(shown, actual, path: str = "") -> list[str]:
    """Where ``actual`` differs from the answer a document shows (a subset of it; ``"…"`` matches anything)."""
    if shown == ANY:
        return []
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return [f"{path or '(answer)'}: the doc shows an object, the answer is {json.dumps(actual)[:80]}"]
        problems = []
        for key, value in shown.items():
            if key not in actual:
                problems.append(f"{path}{'.' if path else ''}{key}: shown in the doc, missing from the answer")
            else:
                problems += shown_answer_mismatches(value, actual[key], f"{path}{'.' if path else ''}{key}")
        return problems
    if isinstance(shown, list):
        if not isinstance(actual, list) or len(actual) < len(shown):
            return [f"{path}: the doc shows {len(shown)} element(s), the answer is {json.dumps(actual)[:80]}"]
        return [problem for index, value in enumerate(shown)
                for problem in shown_answer_mismatches(value, actual[index], f"{path}[{index}]")]
    if shown != actual:
        return [f"{path or '(answer)'}: the doc shows {json.dumps(shown)}, the answer is {json.dumps(actual)[:120]}"]
    return []
