"""``kloyst import``: the operator path creates, maps and runs an import like the API does."""

from __future__ import annotations

import json

import pytest

from imports_processing_support import contacts_of, csv_bytes, reload
from kloyst.cli import build_parser
from kloyst.errors import Unprocessable
from kloyst_plugins.imports import cli, processing
from kloyst_plugins.imports.models import ContactImportJob, ImportStatus


def test_the_import_command_is_registered_with_its_options(registry):
    args = build_parser(registry["kloyst.plugin_manager"]).parse_args(
        ["import", "development.ini", "contacts.csv", "--vendor", "v", "--phone-column", "Mobile",
         "--attribute", "city=City", "--label", "fair", "--default-country", "IN"])
    assert args.handler is cli.cmd_import
    assert cli._mapping_from_args(args) == {"columns": {"phone": "Mobile", "attributes": {"city": "City"}},
                                            "merge_strategy": "MERGE_LABELS", "default_country": "IN",
                                            "labels": ["fair"]}
    args.mapping = json.dumps({"columns": {"phone": "p"}, "merge_strategy": "SKIP_DUPLICATES"})
    assert cli._mapping_from_args(args)["merge_strategy"] == "SKIP_DUPLICATES"


def test_create_confirm_and_run_in_process(db, registry, vendor, tmp_path, task_recorder):
    data, _ = csv_bytes(["Mobile", "Name"], [["9876543210", "Asha"], ["bad", "x"], ["+14155550123", "Bo"]])
    source = tmp_path / "contacts.csv"
    source.write_bytes(data)
    job_id = cli.create_job(registry, vendor.vendor_id, source, scan=False)
    body = {"columns": {"phone": "Mobile", "name": "Name"}, "default_country": "IN",
            "merge_strategy": "MERGE_LABELS"}
    indexes = cli.confirm(registry, vendor.vendor_id, job_id, body, queue=False)
    assert indexes == [0] and task_recorder == []  # in-process: nothing goes to the workers
    for index in indexes:
        processing.run_chunk_now(registry, vendor.vendor_id, job_id, index)
    job = reload(db, ContactImportJob(id=job_id))
    assert (job.status, job.created_count, job.rejected_count) == (ImportStatus.PARTIAL_SUCCESS.value, 2, 1)
    assert job.original_filename == "contacts.csv" and job.stored_name != "contacts.csv"
    assert contacts_of(db, registry, vendor.vendor_id)["+14155550123"]["name"] == "Bo"


def test_a_bad_mapping_is_refused_like_the_api_refuses_it(db, registry, vendor, tmp_path):
    source = tmp_path / "contacts.csv"
    source.write_bytes(csv_bytes(["Mobile"], [["9876543210"]])[0])
    job_id = cli.create_job(registry, vendor.vendor_id, source, scan=False)
    with pytest.raises(Unprocessable, match="unknown merge strategy 'KEEP_LONGER_NAME'"):
        cli.confirm(registry, vendor.vendor_id, job_id, {"columns": {"phone": "Mobile"},
                                                         "merge_strategy": "KEEP_LONGER_NAME"}, queue=False)


def test_the_command_scans_like_an_upload_and_quarantines_what_clamd_finds(db, registry, vendor, tmp_path, clamd,
                                                                          monkeypatch):
    from kloyst.testing.clamd import EICAR

    monkeypatch.setitem(registry.settings, "imports.clamd_address", clamd.address)
    clean, infected = tmp_path / "clean.csv", tmp_path / "infected.csv"
    clean.write_bytes(csv_bytes(["Mobile"], [["9876543210"]])[0])
    infected.write_bytes(b"Mobile\n" + EICAR + b"\n")

    assert reload(db, ContactImportJob(id=cli.create_job(registry, vendor.vendor_id, clean))).status == \
        ImportStatus.AWAITING_MAPPING.value
    quarantined = reload(db, ContactImportJob(id=cli.create_job(registry, vendor.vendor_id, infected)))
    assert quarantined.status == ImportStatus.QUARANTINED.value and quarantined.headers is None
    assert "Eicar" in quarantined.scan_result


def test_without_a_scanner_the_command_refuses_unless_told_the_file_is_trusted(registry, vendor, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setitem(registry.settings, "imports.clamd_address", "")
    source = tmp_path / "contacts.csv"
    source.write_bytes(csv_bytes(["Mobile"], [["9876543210"]])[0])
    with pytest.raises(SystemExit, match="--no-scan"):
        cli.create_job(registry, vendor.vendor_id, source)
    monkeypatch.setitem(registry.settings, "imports.clamd_address", "tcp://127.0.0.1:1")
    with pytest.raises(SystemExit, match="did not answer"):
        cli.create_job(registry, vendor.vendor_id, source)
