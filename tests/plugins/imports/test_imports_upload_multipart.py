"""The streaming multipart parser: correct at every block boundary, and never leaves a file behind on error."""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest

from kloyst.errors import BadRequest, PayloadTooLarge, Unprocessable
from kloyst_plugins.imports import upload

BOUNDARY = "----kloystBoundary7MA4YWxkTrZu0gW"
VENDOR = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


class FakeRequest:
    def __init__(self, body: bytes, content_type: str | None = None) -> None:
        self.headers = {"Content-Type": content_type or f"multipart/form-data; boundary={BOUNDARY}"}
        self.body_file = io.BytesIO(body)


def body(*parts: tuple[str, str | None, bytes], close: bool = True) -> bytes:
    out = b"preamble to ignore\r\n"
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: text/csv\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


@pytest.fixture
def settings(tmp_path):
    return {"imports.storage_dir": str(tmp_path)}


def stored_files(tmp_path) -> list:
    return [p for p in tmp_path.rglob("*") if p.is_file()]


# Data that looks like the boundary's beginning, CRLFs and dashes, to straddle every block edge.
TRICKY = (b"a,b\r\n--" + BOUNDARY[:10].encode() + b"\r\n\r\n--\r\n" + bytes(range(256))) * 40


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 4096])
def test_the_file_part_is_received_exactly_whatever_the_block_size(settings, tmp_path, monkeypatch, block):
    monkeypatch.setattr(upload, "BLOCK", block)
    request = FakeRequest(body(("force", None, b"true"), ("file", "C:\\Users\\me\\list.csv", TRICKY),
                               ("other", None, b"ignored")))
    received = upload.receive(request, settings, VENDOR, max_bytes=len(TRICKY))
    assert received.path.read_bytes() == TRICKY
    assert received.size == len(TRICKY) and received.sha256 == hashlib.sha256(TRICKY).hexdigest()
    assert received.filename == "list.csv"
    assert received.fields == {"force": "true", "other": "ignored"}
    assert received.path.parent == tmp_path / str(VENDOR) and received.path.name.endswith(".part")


def test_one_byte_over_the_limit_is_413_and_the_part_file_is_removed(settings, tmp_path):
    request = FakeRequest(body(("file", "a.csv", b"x" * 101)))
    with pytest.raises(PayloadTooLarge):
        upload.receive(request, settings, VENDOR, max_bytes=100)
    assert stored_files(tmp_path) == []


def test_a_body_cut_short_is_400_and_leaves_no_file(settings, tmp_path):
    request = FakeRequest(body(("file", "a.csv", b"x" * 5000), close=False)[:-200])
    with pytest.raises(BadRequest, match="ended before"):
        upload.receive(request, settings, VENDOR, max_bytes=10_000)
    assert stored_files(tmp_path) == []


def test_two_file_parts_are_refused(settings, tmp_path):
    request = FakeRequest(body(("file", "a.csv", b"a"), ("file", "b.csv", b"b")))
    with pytest.raises(Unprocessable, match="exactly one") as refused:
        upload.receive(request, settings, VENDOR, max_bytes=10_000)
    assert refused.value.details == {"fields": [{"field": "file", "problem": 'send exactly one "file" field'}]}
    assert stored_files(tmp_path) == []


def test_a_missing_filename_is_displayed_as_upload(settings):
    received = upload.receive(FakeRequest(body(("file", "", b"a,b\n"))), settings, VENDOR, max_bytes=100)
    assert received.filename == "upload"


def test_an_overlong_part_header_is_refused(settings, tmp_path):
    raw = f"--{BOUNDARY}\r\nX-Padding: {'a' * 20000}\r\n\r\n".encode()
    with pytest.raises(BadRequest, match="too long"):
        upload.receive(FakeRequest(raw), settings, VENDOR, max_bytes=100)
