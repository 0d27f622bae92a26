"""Kloyst's own tests use the fixtures every plugin author gets (kloyst.testing.pytest_plugin).

The test-only ``probe`` plugin is registered in the repository's root ``conftest.py``.
"""

from __future__ import annotations

import pytest

from kloyst_plugins.wallet.audit import invariant_violations


@pytest.fixture
def ledger_invariants(request):
    """After each test, over every wallet: balance == Σ ledger, held == Σ ledger held == Σ hold outstanding.

    The session is taken during this fixture's set-up, so its teardown (the check) runs before
    ``committed_db`` truncates or ``db_connection`` rolls back what the test wrote.
    """
    names = request.fixturenames
    committed = "committed_db" in names
    session = request.getfixturevalue("committed_db") if committed else (
        request.getfixturevalue("db") if "db" in names else None)
    yield
    if session is None:
        return
    if committed:
        session.rollback()  # end the test's transaction: see what was committed
    violations = invariant_violations(session.connection())
    assert violations == [], "the wallet and its ledger disagree:\n" + "\n".join(violations)


@pytest.fixture
def cli_ini(tmp_path, kloyst_settings, monkeypatch):
    """An ini file of the test database for ``kloyst <command> <ini>`` (``messages check``, ``wallet check``).

    The environment overrides are removed so the CLI reads this file, not the variables a developer exported.
    """
    for name in ("DATABASE_URL", "REDIS_URL", "SERVICE_TYPE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "check.ini"
    path.write_text("[app:main]\nuse = egg:kloyst\n" + "".join(f"{k} = {v}\n" for k, v in kloyst_settings.items()))
    return str(path)
