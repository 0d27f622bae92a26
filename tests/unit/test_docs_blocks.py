"""The README's and docs' shell blocks follow the conventions that let tests/e2e/test_docs_executed.py run them.

The conventions are in ``tests/docs_support.py``. These checks are the cheap half of the
executed-docs test: they need no server, so a placeholder or a curl line outside a shell
block fails here in a second, not after a journey.
"""

from __future__ import annotations

import json

import docs_support
import pytest
from docs_support import ANY, Block, every_block, shown_answer_mismatches

BLOCKS = every_block()


def test_the_docs_have_blocks_to_run():
    assert sum(block.runs for block in BLOCKS) >= 10


def test_a_curl_command_is_always_in_a_shell_block():
    outside = [block.where for block in BLOCKS
               if not block.is_shell and block.language not in ("text", "python") and "curl " in block.text]
    assert outside == [], f"curl lines outside a ```sh block (so never run): {outside}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.runs], ids=lambda b: b.where)
def test_a_block_that_runs_names_no_placeholder(block):
    assert block.placeholders() == [], (
        f"{block.where} asks the reader to type {block.placeholders()}: set a variable in an earlier block instead")


def test_a_block_that_does_not_run_says_why_and_the_readme_runs_all_of_its_own():
    skipped = [block for block in BLOCKS if block.is_shell and block.calls_the_api_or_cli and not block.runs]
    assert all(block.not_run for block in skipped)
    assert [block.where for block in skipped if block.document == "README.md"] == []


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.runs and b.answer is not None], ids=lambda b: b.where)
def test_an_answer_shown_after_a_block_is_json(block):
    json.loads(block.answer)


def test_a_shown_answer_is_a_subset_with_wildcards():
    actual = {"quotation": {"id": "9f1c", "status": "ACTIVE", "items": [{"country": "US"}, {"country": "IN"}]}}
    assert shown_answer_mismatches({"quotation": {"id": ANY, "items": [{"country": "US"}]}}, actual) == []
    assert shown_answer_mismatches({"quotation": {"status": "ACCEPTED"}}, actual) == [
        'quotation.status: the doc shows "ACCEPTED", the answer is "ACTIVE"']
    assert shown_answer_mismatches({"quotation": {"pdf_status": ANY}}, actual) == [
        "quotation.pdf_status: shown in the doc, missing from the answer"]


def test_a_not_run_marker_and_an_answer_belong_to_the_block_they_touch(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_support, "ROOT", tmp_path)
    (tmp_path / "guide.md").write_text("<!-- not-run: the staging server -->\n```sh\ncurl -s https://x/v1\n```\n\n"
                                       "```sh\ncurl -s http://127.0.0.1:6543/healthz\n```\n\n```json\n{}\n```\n")
    first, second, answer = docs_support.blocks(tmp_path / "guide.md")
    assert (first.not_run, first.runs, first.answer) == ("the staging server", False, None)
    assert (second.not_run, second.runs, second.answer, second.line) == (None, True, "{}", 6)
    assert isinstance(answer, Block) and not answer.runs
