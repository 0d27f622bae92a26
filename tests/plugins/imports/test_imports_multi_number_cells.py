"""A phone cell holding several numbers gives the contact its first valid one and keeps the others.

Google Contacts exports a contact's second phone in the same cell, joined by ``:::``
(``(415) 555-2671 ::: +1 415 555 2672``); other tools use ``;``, ``|`` or a line break.
Issue 15 found such rows rejected. Now the first valid number is the contact's, and the
cell's other numbers are kept on it as the ``other_phones`` attribute (E.164 when valid,
as written otherwise). The embedded default (SQLite) is covered in test_imports_embedded.py.
"""

from __future__ import annotations

import pytest

from imports_processing_support import contacts_of, make_job, reload
from kloyst_plugins.contacts import phones
from kloyst_plugins.imports.models import ImportStatus
from kloyst_plugins.imports.phonecache import PhoneCache

MAPPING = {"columns": {"phone": "Phone 1 - Value", "name": "Name"}, "default_country": "US",
           "merge_strategy": "MERGE_LABELS"}


@pytest.fixture
def run_import(testapp, db, registry, owner, enable_plugin, run_outbox, monkeypatch, tmp_path):
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")

    def run_import(rows, mapping=MAPPING, headers=("Name", "Phone 1 - Value")):
        job = make_job(db, registry.settings, owner.vendor_id, list(headers), rows)
        testapp.put_json(f"/v1/imports/{job.id}/mapping", mapping, headers=owner.headers)
        run_outbox()
        return reload(db, job), contacts_of(db, registry, owner.vendor_id)

    return run_import


def test_a_google_contacts_cell_with_two_numbers_takes_the_first_and_keeps_the_second(run_import):
    job, contacts = run_import([["Ada", "(415) 555-2671 ::: +1 415 555 2672"]])
    assert job.status == ImportStatus.COMPLETED.value
    assert (job.created_count, job.rejected_count) == (1, 0)
    assert list(contacts) == ["+14155552671"]
    assert contacts["+14155552671"]["attributes"] == {"other_phones": "+14155552672"}


def test_an_invalid_first_number_gives_way_to_the_next_valid_one_and_is_kept_as_written(run_import):
    job, contacts = run_import([["Grace", "12 ; +1 415 555 2673 | +44 7911 123456\n(415) 555-2673"]])
    assert (job.created_count, job.rejected_count) == (1, 0)
    assert contacts["+14155552673"]["attributes"] == {"other_phones": "12, +447911123456"}


def test_a_cell_with_no_valid_number_among_several_is_rejected_saying_so(run_import, testapp, owner):
    job, contacts = run_import([["Nobody", "12 ::: not a number"], ["Ada", "(415) 555-2674"]])
    assert (job.created_count, job.rejected_count) == (1, 1)
    body = testapp.get(f"/v1/imports/{job.id}/rejected.csv", headers=owner.headers).body.decode("utf-8-sig")
    assert "none of the 2 numbers in the cell is valid" in body


def test_a_mapped_other_phones_column_and_the_cells_extra_numbers_are_both_kept(run_import):
    mapping = {**MAPPING, "columns": {**MAPPING["columns"], "attributes": {"other_phones": "Phone 2 - Value"}}}
    job, contacts = run_import([["Ada", "(415) 555-2675 ::: (415) 555-2676", "+1 415 555 2677"]], mapping,
                               headers=("Name", "Phone 1 - Value", "Phone 2 - Value"))
    assert contacts["+14155552675"]["attributes"] == {"other_phones": "+1 415 555 2677, +14155552676"}


@pytest.mark.parametrize("normalize", [phones.normalize, PhoneCache().normalize], ids=["phonenumbers", "cache"])
def test_first_valid_splits_only_on_the_multi_number_separators(normalize):
    assert phones.first_valid("+1 415-555-2671", "US", normalize) == (phones.normalize("+14155552671"), ())
    phone, others = phones.first_valid("(415) 555-2671 ::: (415) 555-2671 ::: ", "US", normalize)
    assert (phone.e164, others) == ("+14155552671", ())  # the same number twice is one number
    with pytest.raises(phones.InvalidPhone, match="11 numbers in one cell; at most 10 are read"):
        phones.first_valid(" ; ".join(["(415) 555-2671"] * 11), "US", normalize)
