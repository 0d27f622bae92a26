"""The README's command-line synopsis names commands and options `kloyst` has.

The synopsis is usage, not a session (``<ini>``, ``[--batch N]``), so it is checked here
rather than run: every ``kloyst …`` line's subcommand (each of ``upgrade|current|check``)
exists, and every ``--option`` the line shows is in that subcommand's ``--help``.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from kloyst.cli import build_parser
from kloyst.plugins import build_plugin_manager

ROOT = Path(__file__).resolve().parents[2]


def synopsis() -> list[str]:
    """The README's ``kloyst …`` usage lines, continuation lines joined to their command."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## The command line", 1)[1]
    block = re.search(r"```\w*\n(.*?)```", section, re.DOTALL).group(1)
    lines: list[str] = []
    for line in block.splitlines():
        usage = line.split("#", 1)[0].rstrip()
        if usage.startswith("kloyst "):
            lines.append(usage)
        elif usage.strip() and lines:
            lines[-1] += " " + usage.strip()
    return lines


def commands(line: str) -> list[list[str]]:
    """``kloyst db upgrade|current|check <ini>`` → [["db", "upgrade"], ["db", "current"], ["db", "check"]]."""
    words = []
    for word in line.split()[1:]:
        if word.startswith(("<", "[", "-")) or word.isupper() or "." in word:
            break
        words.append(word.split("|"))
    return [[*(w[0] for w in words[:-1]), last] for last in words[-1]] if words else []


def help_text(words: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        build_parser(build_plugin_manager()).parse_args([*words, "--help"])
    assert exited.value.code == 0, f"`kloyst {' '.join(words)}` is not a command"
    return out.getvalue()


def test_the_synopsis_lists_the_commands():
    assert len(synopsis()) >= 15


@pytest.mark.parametrize("line", synopsis())
def test_every_command_and_option_of_the_synopsis_exists(line):
    for words in commands(line):
        shown = help_text(words)
        options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line)
        assert [o for o in options if o not in shown] == [], f"`kloyst {' '.join(words)}` has no such option"
