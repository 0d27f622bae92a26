"""Media retention: a file older than ``media.retention_days`` is deleted, its row stays ``removed`` and its content
answers 410; younger files and the rows' history are untouched (kloyst_plugins/media/retention.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from media_support import sample
from sqlalchemy import update

from kloyst.db import utcnow
from kloyst.retention import Pruner, policies
from kloyst_plugins.media.models import Media


def _upload(testapp, vendor) -> dict:
    return testapp.post("/v1/media", params={"phone_number_id": str(vendor.number.id)},
                        upload_files=[("file", "photo.jpg", sample("image/jpeg"))], headers=vendor.headers,
                        status=201).json["media"]


def _files(settings) -> list[Path]:
    root = Path(settings["media.storage_dir"])
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_an_expired_file_is_deleted_and_its_media_answers_410_removed(testapp, db, registry, vendor,
                                                                      media_settings):
    old, young = _upload(testapp, vendor), _upload(testapp, vendor)
    db.execute(update(Media).where(Media.id == old["id"]).values(created_at=utcnow() - dt.timedelta(days=91)))
    assert len(_files(media_settings)) == 2

    [result] = Pruner(registry, policies(registry)).run(only=["media.files"])

    assert result.removed == 1
    assert len(_files(media_settings)) == 1
    gone = testapp.get(f"/v1/media/{old['id']}", headers=vendor.headers).json["media"]
    assert gone["status"] == "removed" and gone["sha256"] == old["sha256"]
    error = testapp.get(f"/v1/media/{old['id']}/content", headers=vendor.headers, status=410).json["error"]
    assert error["code"] == "media_removed"
    assert testapp.get(f"/v1/media/{young['id']}/content", headers=vendor.headers).body == sample("image/jpeg")
    row = db.get(Media, old["id"])
    assert (row.stored_name, row.file_key_enc, row.enc_kid) == (None, None, None)


def test_a_second_pass_finds_nothing_more_to_remove(testapp, db, registry, vendor, media_settings):
    media = _upload(testapp, vendor)
    db.execute(update(Media).where(Media.id == media["id"]).values(created_at=utcnow() - dt.timedelta(days=400)))
    pruner = Pruner(registry, policies(registry))

    assert [r.removed for r in pruner.run(only=["media.files"])] == [1]
    assert [r.removed for r in pruner.run(only=["media.files"])] == [0]
