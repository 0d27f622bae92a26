"""What a file is, from its bytes, and what WhatsApp takes of it: the sniffer and the limits table on their own."""

from __future__ import annotations

import io
import zipfile

import pytest
from media_support import ANIMATED_WEBP, HEADS

from kloyst_plugins.media import limits
from kloyst_plugins.media.limits import DOCX, MediaRefused, PPTX, sniff, XLSX


def ooxml(main_part: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("_rels/.rels", "<Relationships/>")
        archive.writestr(main_part, "<x/>")
    return buffer.getvalue()


@pytest.mark.parametrize("mime_type", sorted(set(HEADS) - {"audio/mp4"}))
def test_every_type_whatsapp_takes_is_recognised_from_its_first_bytes(mime_type):
    assert sniff(HEADS[mime_type], complete=True).mime_type == mime_type


def test_office_documents_are_told_apart_by_their_zip_entries_or_for_ole2_by_the_extension():
    assert sniff(ooxml("word/document.xml")).mime_type == DOCX
    assert sniff(ooxml("xl/workbook.xml")).mime_type == XLSX
    assert sniff(ooxml("ppt/presentation.xml")).mime_type == PPTX
    ole2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100
    assert sniff(ole2, filename="Budget.XLS").mime_type == "application/vnd.ms-excel"
    assert sniff(ole2, filename="letter.doc").mime_type == "application/msword"
    with pytest.raises(MediaRefused, match="name it .doc, .xls or .ppt"):
        sniff(ole2, filename="letter.bin")


def test_a_zip_that_is_not_an_office_document_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("setup.exe", "MZ")
    with pytest.raises(MediaRefused, match="zip archive") as refused:
        sniff(buffer.getvalue())
    assert refused.value.status == 422


def test_webp_stickers_are_static_unless_the_vp8x_animation_flag_is_set():
    assert sniff(HEADS["image/webp"]).animated is False
    assert sniff(ANIMATED_WEBP).animated is True
    static, animated = sniff(HEADS["image/webp"]), sniff(ANIMATED_WEBP)
    assert limits.max_bytes_for("sticker", static) == 100_000
    assert limits.max_bytes_for("sticker", animated) == 500_000


def test_binary_data_and_text_with_control_characters_are_not_plain_text():
    with pytest.raises(MediaRefused):
        sniff(b"hello\x00world", complete=True)
    with pytest.raises(MediaRefused):
        sniff(b"\x1b[31mred\x1b[0m", complete=True)
    assert sniff("Grüße, 42 €\r\n".encode(), complete=True).mime_type == "text/plain"


def test_a_kind_that_does_not_take_the_type_is_refused_and_an_unknown_kind_too():
    with pytest.raises(MediaRefused, match="does not take as sticker"):
        limits.kind_for(sniff(HEADS["image/png"]), "sticker")
    with pytest.raises(MediaRefused, match="kind must be one of"):
        limits.kind_for(sniff(HEADS["image/png"]), "gif")
    assert limits.kind_for(sniff(HEADS["image/png"]), None) == "image"
    assert limits.kind_for(sniff(HEADS["application/pdf"]), None) == "document"


def test_the_table_is_metas_in_decimal_units():
    assert {kind: limit.max_bytes for kind, limit in limits.MEDIA_LIMITS.items()} == {
        "image": 5_000_000, "video": 16_000_000, "audio": 16_000_000, "document": 100_000_000, "sticker": 500_000}
    assert limits.STATIC_STICKER_MAX_BYTES == 100_000
    assert set(limits.EXTENSIONS) == {m for limit in limits.MEDIA_LIMITS.values() for m in limit.mime_types}
