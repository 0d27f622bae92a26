"""kloyst.clamav against a real clamd (the private test instance): only ``stream: OK`` is clean."""

from __future__ import annotations

import io
import socket
import threading
import zipfile

import pytest

from kloyst.clamav import Clamd, ScannerUnavailable, parse_reply
from kloyst.testing.clamd import EICAR, ClamdServer, free_port


def test_clean_bytes_are_clean(clamd):
    verdict = Clamd(clamd.address).scan([b"name,phone\nAda,+441632960001\n"])
    assert verdict.clean and verdict.signature is None and verdict.reply == "stream: OK"


def test_an_empty_stream_is_clean(clamd):
    assert Clamd(clamd.address).scan([]).clean


def test_eicar_is_found_with_its_signature_name(clamd):
    verdict = Clamd(clamd.address).scan([EICAR])
    assert not verdict.clean
    assert verdict.signature.startswith("Eicar-Test-Signature")


def test_eicar_as_a_csv_row_and_in_utf16_is_found(clamd):
    client = Clamd(clamd.address)
    assert not client.scan([b"name,phone\r\n" + EICAR + b",1\r\n"]).clean
    assert not client.scan([("name,phone\n" + EICAR.decode() + "\n").encode("utf-16")]).clean


def test_a_stream_split_across_many_chunks_is_scanned_whole(clamd):
    chunks = [EICAR[i:i + 7] for i in range(0, len(EICAR), 7)]
    assert not Clamd(clamd.address).scan(chunks).clean


def test_eicar_in_a_zip64_style_member_passes_clamd_which_is_why_members_are_scanned_one_by_one(clamd):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("eicar.com", "w", force_zip64=True) as member:
        member.write(EICAR)
    client = Clamd(clamd.address)
    assert client.scan([buffer.getvalue()]).clean  # upstream Cisco-Talos/clamav#1527
    with zipfile.ZipFile(buffer) as archive:
        assert not client.scan([archive.read("eicar.com")]).clean


def test_a_stream_over_clamds_limit_is_not_clean(tmp_path):
    server = ClamdServer(tmp_path, stream_max_bytes=1024 * 1024).start()
    try:
        verdict = Clamd(server.address).scan([b"a" * (4 * 1024 * 1024)])
    finally:
        server.stop()
    assert not verdict.clean and verdict.signature is None
    assert "limit" in verdict.reason


def test_an_unreachable_clamd_raises_instead_of_answering_clean():
    with pytest.raises(ScannerUnavailable, match="unreachable"):
        Clamd(f"tcp://127.0.0.1:{free_port()}", timeout=2).scan([b"x"])
    assert Clamd(f"tcp://127.0.0.1:{free_port()}").ping() is False


def test_no_configured_address_raises():
    with pytest.raises(ScannerUnavailable, match="no clamd address"):
        Clamd("").scan([b"x"])


def test_a_clamd_that_hangs_up_without_answering_is_unavailable():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def hang_up():
            connection, _ = listener.accept()
            connection.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        with pytest.raises(ScannerUnavailable):
            Clamd(f"tcp://127.0.0.1:{port}", timeout=2).scan([b"x" * 100])
        thread.join()


@pytest.mark.parametrize("reply", ["", "stream: ERROR", "INSTREAM size limit exceeded. ERROR", "stream: OKAY",
                                   "PONG", "stream: OK FOUND"])
def test_anything_but_stream_ok_is_not_clean(reply):
    assert not parse_reply(reply).clean


def test_ping_answers_pong(clamd):
    assert Clamd(clamd.address).ping()
