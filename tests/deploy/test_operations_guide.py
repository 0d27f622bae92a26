"""docs/operations.md names only commands and routes that exist.

An operator copies these lines during an incident; a renamed CLI option or route must fail
here, not there. Every ``kloyst …`` invocation in the guide's shell blocks is parsed by the
real command line, and every ``/v1/…`` path it mentions must match a registered route.
"""

from __future__ import annotations

import re
import shlex

import pytest
from deploy_support import ROOT

from kloyst import make_configurator, testing

GUIDE = (ROOT / "docs" / "operations.md").read_text()
PLACEHOLDER = re.compile(r"<[^<>]+>")
SAMPLE = {"<uuid>": "7f0e3b9a-6a35-4b59-9a6e-2a4f7f0e3b9a"}


def _complete(line: str) -> bool:
    try:
        shlex.split(line, comments=True)
    except ValueError:  # a quoted string goes on over the next lines
        return False
    return not line.endswith("\\")


def shell_commands() -> list[list[str]]:
    """The words of every command in the guide's ``sh`` blocks, continuations joined, placeholders filled."""
    commands, current = [], ""
    for block in re.findall(r"```sh\n(.*?)```", GUIDE, re.DOTALL):
        for raw in block.splitlines():
            current = f"{current}\n{raw}" if current else raw
            if not _complete(current):
                current = current.removesuffix("\\")
                continue
            filled = PLACEHOLDER.sub(lambda m: SAMPLE.get(m.group(0), "x"), current)
            words = shlex.split(filled, comments=True)
            current = ""
            command: list[str] = []
            for word in [*words, "&&"]:
                if word in ("&&", "|", ";", "||"):
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(word)
    return commands


def kloyst_invocations() -> list[list[str]]:
    """The arguments of every full ``kloyst`` command: in shell blocks, and inline ones that name the ini file.

    The program only: ``kloyst`` after an option is PostgreSQL's user (``-U kloyst``).
    """
    invocations = []
    for words in shell_commands():
        programs = [i for i, word in enumerate(words) if word == "kloyst" and not words[i - 1].startswith("-")]
        invocations += [words[i + 1:] for i in programs[:1]]
    prose = re.sub(r"```.*?```", "", GUIDE, flags=re.DOTALL)
    for span in re.findall(r"`(?:[^`\n]* )?kloyst ([^`\n]*/app/staging\.ini[^`\n]*)`", prose):
        if not span.startswith("<"):  # the general form, `kloyst <command> /app/staging.ini`
            invocations.append(shlex.split(PLACEHOLDER.sub("x", span)))
    return invocations


def route_paths() -> set[str]:
    """Every /v1/… path the guide names, in text or in curl lines ($API is /v1), with placeholders as {x}."""
    text = GUIDE.replace("$API", "/v1").replace('"', " ")
    paths = set()
    for path in re.findall(r"(/v1/[A-Za-z0-9_\-/<>{}.]+)", text):
        path = re.sub(r"<[^<>]+>|\{[^{}]+\}", "{x}", path.split("?")[0]).rstrip("/.")
        paths.add(path)
    return paths


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> set[str]:
    here = tmp_path_factory.mktemp("guide")
    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": f"sqlite:///{here / 'kloyst.sqlite'}",
                "kloyst.log.dir": str(here / "log"), "kloyst.mail.file_dir": str(here / "mail")}
    config = make_configurator({"here": str(here)}, settings, environ={})
    config.commit()  # plugin routes are registered in an action of their own
    try:
        # Pyramid keeps prefixed patterns without their leading slash ("v1/auth/login").
        return {"/" + re.sub(r"\{[^{}]+\}", "{x}", route.pattern).lstrip("/")
                for route in config.get_routes_mapper().get_routes()}
    finally:
        config.registry["kloyst.engine"].dispose()


def test_the_guide_shows_kloyst_commands():
    assert len(kloyst_invocations()) >= 8


@pytest.mark.parametrize("args", kloyst_invocations(), ids=" ".join)
def test_every_kloyst_command_in_the_guide_parses(args):
    from kloyst.cli import build_parser
    from kloyst.plugins import build_plugin_manager

    try:
        build_parser(build_plugin_manager()).parse_args(args)
    except SystemExit:
        pytest.fail(f"`kloyst {' '.join(args)}` is not a valid command")


def test_every_route_the_guide_names_is_registered(routes):
    named = route_paths()
    assert "/v1/dead-letters/{x}/requeue" in named  # the extraction still finds the curl lines
    missing = sorted(path for path in named if path not in routes)
    assert missing == [], f"docs/operations.md names routes that do not exist: {missing}"
