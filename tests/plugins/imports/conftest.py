"""Fixtures shared by the imports tests."""

import pytest


@pytest.fixture
def vendor(owner, enable_plugin, registry, monkeypatch, tmp_path):
    """A vendor with contacts and imports on, its import files in a temporary folder.

    Test modules that also need the test clamd override this fixture and ask for it.
    """
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")
    return owner
