"""The zip guard's limits: defaults that admit a million-row sheet, settings that change them."""

from __future__ import annotations

import os
import zipfile

import pytest

from kloyst_plugins.imports import zipguard
from kloyst_plugins.imports.plugin import kloyst_settings


def test_defaults_bound_a_workers_memory_and_keep_the_a5_rules():
    limits = zipguard.limits_from_settings({})
    assert limits == zipguard.DEFAULT_LIMITS
    # python-calamine needs about twice the sheet's XML in memory: keep a worker under ~300 MB.
    assert 2 * limits.max_member_bytes <= 200 * 1024 * 1024
    assert limits.max_member_bytes >= 64 * 1024 * 1024  # still a few hundred thousand rows
    assert limits.max_total_bytes >= limits.max_member_bytes
    assert (limits.max_members, limits.max_ratio) == (200, 100)


def test_settings_override_the_sizes_and_ratio_and_are_declared_by_the_plugin():
    settings = {"imports.xlsx_max_member_bytes": "1000", "imports.xlsx_max_total_bytes": 2000,
                "imports.xlsx_max_ratio": "20"}
    limits = zipguard.limits_from_settings(settings)
    assert (limits.max_member_bytes, limits.max_total_bytes, limits.max_ratio, limits.max_members) == \
        (1000, 2000, 20, 200)
    declared = {s.key: s.default for s in kloyst_settings()}
    assert declared["imports.xlsx_max_member_bytes"] == zipguard.DEFAULT_LIMITS.max_member_bytes
    assert declared["imports.xlsx_max_total_bytes"] == zipguard.DEFAULT_LIMITS.max_total_bytes
    assert declared["imports.xlsx_max_ratio"] == zipguard.DEFAULT_LIMITS.max_ratio
    with pytest.raises(ValueError, match="positive"):
        zipguard.limits_from_settings({"imports.xlsx_max_ratio": "0"})


def _archive(path, member_bytes: bytes) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/worksheets/sheet1.xml", member_bytes)


def test_a_member_over_the_old_25_mb_cap_passes_when_it_compresses_like_data(tmp_path):
    # Hex text compresses ~2:1, far from a bomb's ratio: 30 MB is a big sheet, not an attack.
    path = tmp_path / "big.xlsx"
    _archive(path, os.urandom(15 * 1024 * 1024).hex().encode())
    members = zipguard.check(path)
    assert max(m.file_size for m in members) > 25 * 1024 * 1024
    with pytest.raises(zipguard.ZipRefused, match="member too large"):
        zipguard.check(path, zipguard.ZipLimits(max_member_bytes=25 * 1024 * 1024))


def test_the_ratio_still_refuses_a_bomb_under_the_size_limits(tmp_path):
    path = tmp_path / "bomb.xlsx"
    _archive(path, b" " * (20 * 1024 * 1024))
    with pytest.raises(zipguard.ZipRefused, match="zip bombs"):
        zipguard.check(path)
