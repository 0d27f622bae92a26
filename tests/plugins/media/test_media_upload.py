"""POST /v1/media: WhatsApp's type and size limits per kind at their exact edges, the type sniffed from the bytes,
the virus scan, encryption at rest, and Meta's upload (the sandbox, over real HTTP).

Real PostgreSQL, a real clamd (EICAR signatures) and the Meta sandbox. A refusal leaves nothing:
no row, no file, no upload at Meta.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
from media_support import ANIMATED_WEBP, EDGES, sample, TOKEN

from kloyst.testing.clamd import EICAR
from kloyst_plugins.media.models import Media


def upload(testapp, vendor, content: bytes, filename: str = "file.bin", *, kind: str | None = None,
           number_id=None, status: int = 201):
    params = {"phone_number_id": str(number_id or vendor.number.id), **({"kind": kind} if kind else {})}
    return testapp.post("/v1/media", params=params, upload_files=[("file", filename, content)],
                        headers=vendor.headers, status=status)


def stored_files(settings) -> list:
    from pathlib import Path

    root = Path(settings["media.storage_dir"])
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def sandbox_media(meta_sandbox) -> dict:
    with meta_sandbox.state.lock:
        return dict(meta_sandbox.state.media.items)


@pytest.mark.parametrize(("kind", "mime_type", "limit"), EDGES)
def test_each_kind_takes_a_file_of_exactly_its_limit_and_refuses_one_byte_more(testapp, vendor, meta_sandbox,
                                                                              media_settings, kind, mime_type,
                                                                              limit):
    at_limit = sample(mime_type, limit)
    media = upload(testapp, vendor, at_limit, kind=kind).json["media"]
    assert (media["kind"], media["mime_type"], media["size_bytes"], media["status"]) == (kind, mime_type, limit,
                                                                                        "stored")
    assert media["sha256"] == hashlib.sha256(at_limit).hexdigest()
    assert sandbox_media(meta_sandbox)[media["meta_media_id"]].data == at_limit

    before = len(sandbox_media(meta_sandbox))
    error = upload(testapp, vendor, sample(mime_type, limit + 1), kind=kind, status=413).json["error"]
    assert error["code"] == "media_too_large"
    assert error["details"]["limit_bytes"] == limit
    assert len(sandbox_media(meta_sandbox)) == before
    assert len(stored_files(media_settings)) == 1


def test_an_animated_sticker_may_have_500_kb_and_a_static_one_only_100_kb(testapp, vendor, media_settings):
    animated = upload(testapp, vendor, sample("image/webp", 500_000, head=ANIMATED_WEBP)).json["media"]
    assert (animated["kind"], animated["size_bytes"]) == ("sticker", 500_000)
    upload(testapp, vendor, sample("image/webp", 500_001, head=ANIMATED_WEBP), status=413)
    error = upload(testapp, vendor, sample("image/webp", 100_001), status=413).json["error"]
    assert "static sticker" in error["message"]


def test_the_type_comes_from_the_bytes_not_from_the_name_or_the_content_type(testapp, vendor, media_settings):
    pdf_named_jpg = upload(testapp, vendor, sample("application/pdf"), "photo.jpg").json["media"]
    assert (pdf_named_jpg["kind"], pdf_named_jpg["mime_type"]) == ("document", "application/pdf")
    # A PDF sent as an image is refused, whatever the client calls it.
    error = upload(testapp, vendor, sample("application/pdf"), "photo.jpg", kind="image", status=422).json["error"]
    assert error["code"] == "wrong_type" and "image/jpeg, image/png" in error["message"]


@pytest.mark.parametrize(("content", "what"), [
    (b"GIF89a" + b"\x00" * 100, "a GIF"),
    (b"MZ\x90\x00" + b"\x00" * 100, "a Windows program"),
    (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01vorbis" + b"\x00" * 50, "an OGG Vorbis file"),
    (b"PK\x03\x04" + b"\x00" * 26 + b"evil.exe", "a zip archive"),
])
def test_types_whatsapp_does_not_take_are_refused_with_422_before_anything_is_kept(testapp, vendor, meta_sandbox,
                                                                                  media_settings, content, what):
    error = upload(testapp, vendor, content, "file.jpg", status=422).json["error"]
    assert error["code"] == "wrong_type", what
    assert stored_files(media_settings) == [] and sandbox_media(meta_sandbox) == {}


def test_an_mp4_sent_as_audio_is_audio_mp4_and_as_video_video_mp4(testapp, vendor, media_settings):
    mp4 = sample("video/mp4", 2_000)
    assert upload(testapp, vendor, mp4, kind="audio").json["media"]["mime_type"] == "audio/mp4"
    assert upload(testapp, vendor, mp4, kind="video").json["media"]["mime_type"] == "video/mp4"
    assert upload(testapp, vendor, sample("audio/mp4")).json["media"]["kind"] == "audio"


def test_an_infected_file_is_refused_with_422_and_nothing_is_stored_or_sent(testapp, vendor, meta_sandbox,
                                                                          media_settings, db):
    error = upload(testapp, vendor, b"%PDF-1.4\n" + EICAR + b"\n", "invoice.pdf", status=422).json["error"]
    assert error["code"] == "infected" and "Eicar" in error["message"]
    assert stored_files(media_settings) == [] and sandbox_media(meta_sandbox) == {}
    assert db.query(Media).count() == 0


def test_the_stored_file_is_encrypted_and_served_back_as_uploaded(testapp, vendor, media_settings):
    content = sample("image/png", 3 * 1024 * 1024 + 17)  # several encrypted segments
    media = upload(testapp, vendor, content, "shop front.png").json["media"]
    (path,) = stored_files(media_settings)
    assert path.parent.name == str(vendor.vendor_id)
    on_disk = path.read_bytes()
    assert content[:1024] not in on_disk and len(on_disk) > len(content)
    served = testapp.get(f"/v1/media/{media['id']}/content", headers=vendor.headers)
    assert served.body == content
    assert served.content_type == "image/png"
    assert served.headers["Content-Disposition"].startswith('inline; filename="shop front.png"')


def test_a_document_is_served_as_an_attachment_with_its_name(testapp, vendor, media_settings):
    media = upload(testapp, vendor, sample("application/pdf", 5_000), "Factura nº 7.pdf").json["media"]
    served = testapp.get(f"/v1/media/{media['id']}/content", headers=vendor.headers)
    assert served.content_type == "application/pdf"
    assert served.headers["Content-Disposition"] == (
        "attachment; filename=\"Factura n_ 7.pdf\"; filename*=UTF-8''Factura%20n%C2%BA%207.pdf")


def test_the_upload_reaches_meta_with_the_numbers_token_and_the_sniffed_type(testapp, vendor, meta_sandbox,
                                                                            media_settings):
    meta_sandbox.state.behaviour.update({"access_token": TOKEN})
    media = upload(testapp, vendor, sample("audio/ogg", 4_000), "voice.ogg").json["media"]
    at_meta = sandbox_media(meta_sandbox)[media["meta_media_id"]]
    assert at_meta.mime_type == "audio/ogg"


def test_a_number_of_another_vendor_or_none_is_refused(testapp, vendor, db, registry, meta_sandbox):
    from media_support import media_vendor

    other = media_vendor(db, registry, meta_sandbox, "Other Co")
    error = upload(testapp, vendor, sample("image/png"), number_id=other.number.id, status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "phone_number_id"
    testapp.post("/v1/media", upload_files=[("file", "a.png", sample("image/png"))], headers=vendor.headers,
                 status=422)


def test_a_body_larger_than_the_largest_media_is_refused_before_it_is_read(testapp, vendor):
    response = testapp.post("/v1/media", b"x", headers={**vendor.headers, "Content-Type": "multipart/form-data; "
                            "boundary=x", "Content-Length": str(100_000_000 + 64 * 1024 + 1)}, status=413,
                            expect_errors=True)
    assert response.json["error"]["code"] == "payload_too_large"


def test_with_the_scanner_down_an_upload_is_refused_with_503_and_nothing_kept(testapp, vendor, monkeypatch,
                                                                            registry, meta_sandbox, media_settings):
    from kloyst.testing.processes import free_port

    monkeypatch.setitem(registry.settings, "media.clamd_address", f"tcp://127.0.0.1:{free_port()}")
    error = upload(testapp, vendor, sample("image/png"), status=503).json["error"]
    assert error["code"] == "scanner_unavailable"
    assert stored_files(media_settings) == [] and sandbox_media(meta_sandbox) == {}


def test_another_vendors_media_is_404(testapp, vendor, db, registry, meta_sandbox):
    from media_support import media_vendor

    media = upload(testapp, vendor, sample("image/png")).json["media"]
    other = media_vendor(db, registry, meta_sandbox, "Other Co")
    testapp.get(f"/v1/media/{media['id']}", headers=other.headers, status=404)
    testapp.get(f"/v1/media/{media['id']}/content", headers=other.headers, status=404)
    testapp.get(f"/v1/media/{uuid.uuid4()}", headers=vendor.headers, status=404)
    assert testapp.get("/v1/media", headers=other.headers).json["items"] == []


def test_with_scanning_off_and_no_scanner_the_media_says_it_was_not_scanned(testapp, vendor, monkeypatch, registry):
    from kloyst_plugins.media.scanning import NOT_SCANNED

    monkeypatch.setitem(registry.settings, "media.scan", "off")
    monkeypatch.setitem(registry.settings, "media.clamd_address", "")
    media = upload(testapp, vendor, sample("image/png")).json["media"]
    assert (media["status"], media["scan_result"]) == ("stored", NOT_SCANNED)


def test_key_rotation_reseals_each_files_key_and_the_file_is_served_with_the_new_key_alone(testapp, vendor,
                                                                                          registry, monkeypatch,
                                                                                          media_settings):
    import os

    from kloyst.api import FieldCipher
    from kloyst.key_rotation import encrypted_tables, rotate_table

    # The test keyring stays behind them: the vendor's WABA token was sealed with it.
    ring = dict(registry.settings["kloyst.crypto.data_keys"])
    old, new = os.urandom(32), os.urandom(32)
    monkeypatch.setitem(registry, "kloyst.cipher", FieldCipher({"old": old, **ring}))
    content = sample("image/png", 2 * 1024 * 1024 + 5)
    media = upload(testapp, vendor, content).json["media"]
    (spec,) = encrypted_tables(registry["kloyst.plugin_manager"], ["media"])
    report = rotate_table(registry["kloyst.session_factory"], FieldCipher({"new": new, "old": old, **ring}), spec)
    assert (report.rotated, report.failed) == (1, 0)
    monkeypatch.setitem(registry, "kloyst.cipher", FieldCipher({"new": new, **ring}))
    assert testapp.get(f"/v1/media/{media['id']}/content", headers=vendor.headers).body == content
