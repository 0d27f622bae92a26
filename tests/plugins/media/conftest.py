"""Fixtures shared by the media tests: a clamd that takes the largest document, a vendor that can upload."""

from __future__ import annotations

import pytest

from kloyst.testing.clamd import ClamdServer
from media_support import media_vendor


@pytest.fixture(scope="session")
def media_clamd(tmp_path_factory):
    """A private clamd whose stream limit is above WhatsApp's largest media (a 100 MB document).

    The suite's shared ``clamd`` stops reading at 50 MB, as imports need; a media deployment's clamd
    must take StreamMaxLength ≥ 100M too (docs/media.md), and this one does.
    """
    server = ClamdServer(tmp_path_factory.mktemp("media-clamd"), stream_max_bytes=110 * 1024 * 1024)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def media_settings(registry, monkeypatch, tmp_path, media_clamd):
    """Media files in a temporary folder, scanned by the test clamd."""
    monkeypatch.setitem(registry.settings, "media.storage_dir", str(tmp_path / "media"))
    monkeypatch.setitem(registry.settings, "media.clamd_address", media_clamd.address)
    monkeypatch.setitem(registry.settings, "media.scan", "required")
    return registry.settings


@pytest.fixture
def vendor(db, registry, meta_sandbox, media_settings):
    """A vendor with waba and media on, one number known to the sandbox."""
    return media_vendor(db, registry, meta_sandbox)
