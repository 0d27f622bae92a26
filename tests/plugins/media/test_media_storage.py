"""Media files at rest: encrypted per file, bound to the vendor, the media and each segment's place."""

from __future__ import annotations

import os
import uuid

import pytest

from kloyst.api import ConfigurationError, FieldCipher
from kloyst.crypto import DecryptionError
from kloyst.testing.clamd import EICAR
from kloyst_plugins.media import scanning, storage


@pytest.fixture
def settings(tmp_path):
    return {"kloyst.here": str(tmp_path), "media.storage_dir": "media"}


@pytest.fixture
def cipher():
    return FieldCipher({"k1": os.urandom(32)})


def test_a_file_of_several_segments_reads_back_exactly_and_is_not_plaintext_on_disk(settings, cipher):
    vendor, media = uuid.uuid4(), uuid.uuid4()
    data = os.urandom(2 * storage.SEGMENT_BYTES + 123)
    stored = storage.write(settings, cipher, vendor, media, data)
    assert stored.kid == "k1"
    on_disk = storage.path_for(settings, vendor, stored.name).read_bytes()
    assert data[:4096] not in on_disk
    chunks = storage.read_chunks(settings, cipher, vendor, media, stored.name, stored.sealed_key)
    assert [len(c) for c in chunks] == [storage.SEGMENT_BYTES, storage.SEGMENT_BYTES, 123]
    assert storage.read(settings, cipher, vendor, media, stored.name, stored.sealed_key) == data


def test_every_write_is_a_new_file_so_racing_fetches_of_one_media_never_overwrite_each_other(settings, cipher):
    vendor, media = uuid.uuid4(), uuid.uuid4()
    first = storage.write(settings, cipher, vendor, media, b"first")
    second = storage.write(settings, cipher, vendor, media, b"second")
    assert first.name != second.name
    assert storage.read(settings, cipher, vendor, media, first.name, first.sealed_key) == b"first"
    assert storage.read(settings, cipher, vendor, media, second.name, second.sealed_key) == b"second"


def test_a_file_moved_to_another_media_or_cut_short_does_not_decrypt(settings, cipher):
    vendor, media, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    data = os.urandom(storage.SEGMENT_BYTES + 10)
    stored = storage.write(settings, cipher, vendor, media, data)
    # The file and its key, claimed by another media of the same vendor.
    with pytest.raises(storage.StoredFileError, match="does not authenticate"):
        storage.read(settings, cipher, vendor, other, stored.name, stored.sealed_key)
    # Dropping the last segment makes the first one the last: its associated data no longer matches.
    path = storage.path_for(settings, vendor, stored.name)
    path.write_bytes(path.read_bytes()[:len(storage.MAGIC) + 8 + storage.SEGMENT_BYTES + storage.TAG_BYTES])
    with pytest.raises(storage.StoredFileError):
        storage.read(settings, cipher, vendor, media, stored.name, stored.sealed_key)


def test_the_key_of_one_vendors_file_does_not_open_for_another_vendor(settings, cipher):
    vendor, media = uuid.uuid4(), uuid.uuid4()
    stored = storage.write(settings, cipher, vendor, media, b"data")
    with pytest.raises(DecryptionError, match="does not authenticate"):
        storage.read(settings, cipher, uuid.uuid4(), media, stored.name, stored.sealed_key)


def test_scanning_off_is_refused_beyond_this_machine():
    local = {"media.scan": "off", "media.clamd_address": "", "kloyst.http.host": "127.0.0.1",
             "kloyst.http.public_url": "http://127.0.0.1:6543", "kloyst.http.trusted_proxy": ""}
    scanning.check_settings(local)
    assert scanning.scan(local, b"anything") is None
    assert scanning.scan_result(None) == scanning.NOT_SCANNED
    with pytest.raises(ConfigurationError, match="listens on 0.0.0.0"):
        scanning.check_settings({**local, "kloyst.http.host": "0.0.0.0"})
    with pytest.raises(ConfigurationError, match="users reach it at https://kloyst.example"):
        scanning.check_settings({**local, "kloyst.http.public_url": "https://kloyst.example"})


def test_with_a_scanner_configured_media_are_scanned_even_if_scanning_says_off(media_clamd):
    # The address is shared with imports: turning scanning on for imports scans media too.
    settings = {"media.scan": "off", "media.clamd_address": media_clamd.address, "kloyst.http.host": "0.0.0.0"}
    scanning.check_settings(settings)
    assert not scanning.is_off(settings)
    verdict = scanning.scan(settings, EICAR)
    assert verdict is not None and not verdict.clean
