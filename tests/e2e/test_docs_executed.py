"""The README and docs/*.md, run as a reader runs them: every curl and kloyst block, in order, on a fresh `make run`.

One embedded default (``kloyst run`` of a copy of development.ini in an empty directory,
SQLite, one process, the Meta sandbox in-process) serves the whole session. Its directory
mirrors the repository (every top-level entry linked in but ``var/``), so paths the docs name
(``.venv/bin/kloyst``, ``examples/…``, ``var/mail/``) mean what they mean in a checkout. The
blocks run in document order, README.md first, each in ``bash -e -o pipefail`` with the
variables earlier blocks set (the conventions are in ``tests/docs_support.py``). ``curl`` is a
shim that sends the reader's request to this test's ports (the docs say 6543 and 6590) and
records every answer. A block fails the document when one of its commands fails, when any
HTTP call answers other than 2xx, when a JSON answer does not fit ``/v1/openapi.json`` (closed
response schemas), or when the answer a document shows after a block differs from the real one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docs_support import ROOT, Block, blocks, documents, shown_answer_mismatches
from e2e_support import http_json

from kloyst.testing.answers import AnswerChecker
from kloyst.testing.deployment import process_env
from kloyst.testing.processes import free_port

pytestmark = pytest.mark.slow

DOC_PORTS = {"6543": "api", "6590": "sandbox"}  # what the docs say → which of this test's ports
BLOCK_TIMEOUT = 120  # seconds: the longest block waits for a campaign to finish
CURL_SHIM = Path(__file__).with_name("docs_curl.py")

class DocsSession:
    """The reader's terminal: a directory like a checkout, the server it started, and the shell variables so far."""

    def __init__(self, directory: Path, ports: dict[str, str], env: dict[str, str]) -> None:
        self.directory = directory
        self.ports = ports
        self.env = env
        self.state = directory / ".docs-session"
        self.state.write_text("")
        self.log = directory / ".docs-curl.jsonl"
        self.variables: set[str] = set()
        self.checker: AnswerChecker | None = None

    def run(self, block) -> tuple[subprocess.CompletedProcess, list[dict]]:
        """Run one block in the session; its output, and the HTTP calls it made."""
        self.variables |= set(block.assigned_variables())
        state = shlex.quote(str(self.state))
        # Only the variables the docs set: `declare -p` alone would save bash's own, some read-only.
        save = (f"declare -p {' '.join(sorted(self.variables))} > {state}.next 2>/dev/null || true\n"
                f"mv {state}.next {state}\n") if self.variables else ""
        script = f"set -eo pipefail\nsource {state}\n{block.text}\n{save}"
        before = self.log.read_text().count("\n") if self.log.exists() else 0
        done = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=self.directory,
                              env={**self.env, "DOCS_BLOCK": block.where}, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT)
        calls = [json.loads(line) for line in self.log.read_text().splitlines()[before:]] if self.log.exists() else []
        return done, calls

    def problems(self, block, done, calls) -> list[str]:
        problems = []
        if done.returncode != 0:
            problems.append(f"the block exited {done.returncode}")
        for call in calls:
            method, _, url = call["call"].partition(" ")
            status = call["status"]
            if status is None or not 200 <= status < 300:
                problems.append(f"{call['call'] or call['argv']} answered {status}: {(call['body'] or '')[:400]}")
                continue
            path = url.split("://", 1)[-1].split("/", 1)[-1]
            if f":{self.ports['api']}/" in url and call["body"] is not None:
                problems += self.checker.problems(method, "/" + path, status, call["body"], call["content_type"])
        if block.answer is not None and calls:
            shown = json.loads(block.answer)
            last = calls[-1]
            try:
                actual = json.loads(last["body"] or "null")
            except ValueError:
                problems.append(f"the doc shows a JSON answer; {last['call']} answered {last['body'][:200]!r}")
            else:
                problems += shown_answer_mismatches(shown, actual)
        return problems


def _mirror_checkout(directory: Path) -> None:
    """Link every top-level entry of the checkout into ``directory``, but development.ini and var/ (fresh ones)."""
    for entry in ROOT.iterdir():
        if entry.name not in ("development.ini", "var", ".git") and not (directory / entry.name).exists():
            (directory / entry.name).symlink_to(entry)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    directory = tmp_path_factory.mktemp("checkout")
    _mirror_checkout(directory)
    ports = {"api": str(free_port()), "sandbox": str(free_port()), "webhook": str(free_port())}
    ini = directory / "development.ini"
    text = (ROOT / "development.ini").read_text()
    ini.write_text(text.replace("kloyst.meta.graph_url = http://127.0.0.1:6590",
                                f"kloyst.meta.graph_url = http://127.0.0.1:{ports['sandbox']}"))
    assert f"127.0.0.1:{ports['sandbox']}" in ini.read_text(), "development.ini no longer names the sandbox's URL"
    server_env = process_env(PORT=ports["api"], WEBHOOK_PORT=ports["webhook"])
    out, err = directory / "kloyst.out", directory / "kloyst.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen([str(Path(sys.executable).with_name("kloyst")), "run", "development.ini"],
                                   cwd=directory, env=server_env, stdout=stdout, stderr=stderr)
    try:
        _wait_until_up(f"http://127.0.0.1:{ports['api']}/healthz", process, out, err)
        shim = directory / ".docs-bin"
        shim.mkdir()
        (shim / "curl").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(CURL_SHIM))} "
                                   '"$@"\n')
        (shim / "curl").chmod(0o755)
        path = os.pathsep.join([str(shim), str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])
        env = process_env(PATH=path, DOCS_PORTS=json.dumps({said: ports[which] for said, which in DOC_PORTS.items()}),
                          DOCS_CURL_LOG=str(directory / ".docs-curl.jsonl"), DOCS_REAL_CURL=shutil.which("curl"))
        docs = DocsSession(directory, ports, env)
        status, document = http_json(f"http://127.0.0.1:{ports['api']}/v1/openapi.json")
        assert status == 200
        docs.checker = AnswerChecker(document)
        yield docs
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, process, out: Path, err: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"kloyst run exited {process.returncode}:\n{out.read_text()}\n{err.read_text()}")
        try:
            if http_json(url, timeout=1)[0] == 200:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    pytest.fail(f"kloyst run did not answer {url} within {timeout}s:\n{out.read_text()}\n{err.read_text()}")


RUN_DOCUMENTS = [path for path in documents() if any(block.runs for block in blocks(path))]


def test_the_readme_is_run_first_and_has_blocks_to_run():
    assert RUN_DOCUMENTS and RUN_DOCUMENTS[0].name == "README.md"
    assert sum(block.runs for block in blocks(RUN_DOCUMENTS[0])) >= 4


@pytest.mark.parametrize("path", RUN_DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_documented_command_answers_as_the_document_says(session, path):
    for block in blocks(path):
        if not block.runs:
            continue
        done, calls = session.run(block)
        problems = session.problems(block, done, calls)
        if problems:
            pytest.fail(f"{block.where}:\n{block.text}\n\n" + "\n".join(f"- {p}" for p in problems)
                        + f"\n\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")


def test_a_block_fails_on_a_command_that_fails_a_call_not_2xx_an_undocumented_answer_or_another_shown_one(tmp_path):
    thing = {"type": "object", "required": ["thing"], "additionalProperties": False,
             "properties": {"thing": {"type": "string"}}}
    session = DocsSession(tmp_path, {"api": "1234"}, {})
    session.checker = AnswerChecker({"paths": {"/v1/things/{id}": {"get": {"responses": {
        "200": {"content": {"application/json": {"schema": thing}}}}}}}})
    block = Block("guide.md", 1, "sh", "curl -s http://127.0.0.1:6543/v1/things/7", None, '{"thing": "a"}')
    succeeded = subprocess.CompletedProcess([], 0, "", "")
    call = {"call": "GET http://127.0.0.1:1234/v1/things/7", "argv": [], "status": 200, "body": '{"thing": "a"}',
            "content_type": "application/json"}
    assert session.problems(block, succeeded, [call]) == []
    assert session.problems(block, subprocess.CompletedProcess([], 1, "", ""), [call]) == ["the block exited 1"]
    assert "answered 404" in session.problems(block, succeeded, [{**call, "status": 404}])[0]
    undocumented = session.problems(block, succeeded, [{**call, "body": '{"thing": "a", "secret": 1}'}])
    assert len(undocumented) == 1 and "secret" in undocumented[0]
    assert session.problems(block, succeeded, [{**call, "body": '{"thing": "b"}'}]) == [
        'thing: the doc shows "a", the answer is "b"']
