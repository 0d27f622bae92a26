"""The first run of the embedded default creates the demo owner and prints its password once; later runs
say where the note that keeps it is, so restarts do not repeat a password into every log."""

from __future__ import annotations

import stat

import pytest

from kloyst.cli.commands import DEMO_EMAIL, _first_run_account


@pytest.fixture
def embedded_registry(embedded_config):
    return embedded_config.registry


def test_the_password_is_printed_on_the_first_run_only_and_later_runs_point_at_the_note(embedded_registry, tmp_path):
    first = _first_run_account(embedded_registry)
    password = first.split(" with password ", 1)[1].split()[0]
    assert first.startswith(f"First run: created the demo vendor owner {DEMO_EMAIL} with password ")
    note = tmp_path / "var" / "first-run.txt"
    assert password in note.read_text()
    assert stat.S_IMODE(note.stat().st_mode) == 0o600

    later = _first_run_account(embedded_registry)
    assert later == f"Demo vendor owner {DEMO_EMAIL}: its password and sign-in line are in {note}"
    assert password not in later and "First run" not in later
    assert password in note.read_text()  # the note is kept as it was


def test_a_database_with_users_but_no_note_prints_nothing(embedded_registry, tmp_path):
    _first_run_account(embedded_registry)
    (tmp_path / "var" / "first-run.txt").unlink()
    assert _first_run_account(embedded_registry) is None
