"""Creating, reading, changing and deleting one contact through /v1/contacts."""

import pytest

from kloyst.accounts.models import Role

GB_MOBILE = "+447400123456"


def test_create_reads_a_national_number_with_the_default_country(vendor, add_contact):
    contact = add_contact(vendor, "07400 123456", default_country="gb", name="Ada Lovelace", labels=[" vip ", "uk"],
                          attributes={"tier": "gold", "score": 3.5, "active": True, "note": None})
    assert contact["mobile"] == GB_MOBILE
    assert contact["country"] == "GB"
    assert contact["calling_code"] == 44
    assert contact["name"] == "Ada Lovelace"
    assert contact["labels"] == ["vip", "uk"]
    assert contact["attributes"] == {"tier": "gold", "score": 3.5, "active": True, "note": None}
    assert contact["opted_out"] is False and contact["opted_out_at"] is None
    assert contact["source"] == "api"
    assert contact["created_at"] and contact["updated_at"]


def test_get_returns_the_decrypted_contact(testapp, vendor, add_contact):
    created = add_contact(vendor, "+1 201-555-0123", name="Grace")
    got = testapp.get(f"/v1/contacts/{created['id']}", headers=vendor.headers).json["contact"]
    assert got == created
    assert got["mobile"] == "+12015550123" and got["country"] == "US"


@pytest.mark.parametrize(("mobile", "country", "reason"), [
    ("+999123", None, "unknown country code"),
    ("07700 900123", "GB", "not a valid number for GB"),  # Ofcom's drama range: not a real number
    ("call me maybe", "GB", "not a phone number"),
    ("07400 123456", None, "unknown country code"),  # national format without a default country
    ("1", "GB", "not a phone number"),
])
def test_an_invalid_number_is_422_saying_why(add_contact, vendor, mobile, country, reason):
    body = {"default_country": country} if country else {}
    error = add_contact(vendor, mobile, status=422, **body)["error"]
    assert error["code"] == "invalid_phone"
    assert reason in error["message"]
    assert error["details"]["fields"][0]["field"] == "mobile"


def test_an_unknown_default_country_is_422(add_contact, vendor):
    error = add_contact(vendor, "07400 123456", default_country="XX", status=422)["error"]
    assert error["details"]["fields"][0]["field"] == "default_country"


@pytest.mark.parametrize("second", ["07400 123456", "+44 7400 123456", "0044 7400 123456", "(07400) 123-456",
                                    "447400123456", "+447400123456"])
def test_the_same_number_written_another_way_is_409_naming_the_existing_contact(add_contact, vendor, second):
    first = add_contact(vendor, "+44 (0)7400 123 456".replace("(0)", ""))
    error = add_contact(vendor, second, default_country="GB", status=409)["error"]
    assert error["code"] == "duplicate_contact"
    assert error["details"]["contact_id"] == first["id"]
    assert first["id"] in error["message"]


def test_the_same_number_in_two_vendors_is_two_contacts_invisible_to_each_other(testapp, accounts, enable_plugin,
                                                                                add_contact):
    vendor_a, vendor_b = accounts.vendor("A"), accounts.vendor("B")
    enable_plugin(vendor_a, "contacts")
    enable_plugin(vendor_b, "contacts")
    a = add_contact(vendor_a, GB_MOBILE, name="Alice at A")
    b = add_contact(vendor_b, GB_MOBILE, name="Bob at B")
    assert a["id"] != b["id"]
    assert [c["id"] for c in testapp.get("/v1/contacts", headers=vendor_a.headers).json["items"]] == [a["id"]]
    assert [c["id"] for c in testapp.get("/v1/contacts", headers=vendor_b.headers).json["items"]] == [b["id"]]
    url = f"/v1/contacts/{b['id']}"
    testapp.get(url, headers=vendor_a.headers, status=404)
    testapp.patch_json(url, {"name": "Hijacked"}, headers=vendor_a.headers, status=404)
    testapp.delete(url, headers=vendor_a.headers, status=404)
    testapp.post(f"{url}/opt-out", headers=vendor_a.headers, status=404)
    testapp.get(f"{url}/audit", headers=vendor_a.headers, status=404)
    assert testapp.get(url, headers=vendor_b.headers).json["contact"]["name"] == "Bob at B"
    found = testapp.get("/v1/contacts", {"phone": GB_MOBILE}, headers=vendor_a.headers).json["items"]
    assert [c["id"] for c in found] == [a["id"]]


def test_contacts_routes_are_404_for_a_vendor_without_the_plugin(testapp, owner, enable_plugin):
    for method, path in (("GET", "/v1/contacts"), ("POST", "/v1/contacts"), ("GET", "/v1/contacts/export"),
                         ("POST", "/v1/contacts/bulk")):
        response = testapp.request(path, method=method, headers=owner.headers, body=b"{}",
                                   content_type="application/json", expect_errors=True)
        assert response.status_int == 404, (method, path)
    enable_plugin(owner, "contacts")
    testapp.get("/v1/contacts", headers=owner.headers, status=200)


def test_patch_changes_only_the_given_fields(testapp, vendor, add_contact):
    created = add_contact(vendor, GB_MOBILE, name="Ada", labels=["a"], attributes={"x": 1})
    url = f"/v1/contacts/{created['id']}"
    patched = testapp.patch_json(url, {"labels": ["b", "c"]}, headers=vendor.headers).json["contact"]
    assert patched["labels"] == ["b", "c"] and patched["name"] == "Ada" and patched["attributes"] == {"x": 1}
    patched = testapp.patch_json(url, {"mobile": "201 555 0123", "default_country": "US", "name": None},
                                 headers=vendor.headers).json["contact"]
    assert patched["mobile"] == "+12015550123" and patched["country"] == "US" and patched["calling_code"] == 1
    assert patched["name"] is None
    assert testapp.get("/v1/contacts", {"phone": "+12015550123"}, headers=vendor.headers).json["items"][0]["id"] \
        == created["id"]
    assert testapp.get("/v1/contacts", {"phone": GB_MOBILE}, headers=vendor.headers).json["items"] == []


def test_patch_to_a_number_another_contact_has_is_409(testapp, vendor, add_contact):
    first = add_contact(vendor, GB_MOBILE)
    second = add_contact(vendor, "+12015550123")
    error = testapp.patch_json(f"/v1/contacts/{second['id']}", {"mobile": "07400123456", "default_country": "GB"},
                               headers=vendor.headers, status=409).json["error"]
    assert error["details"]["contact_id"] == first["id"]


def test_patch_with_an_invalid_number_is_422(testapp, vendor, add_contact):
    created = add_contact(vendor, GB_MOBILE)
    error = testapp.patch_json(f"/v1/contacts/{created['id']}", {"mobile": "+999123"}, headers=vendor.headers,
                               status=422).json["error"]
    assert error["code"] == "invalid_phone"


def test_delete_removes_the_contact_and_frees_its_number(testapp, vendor, add_contact):
    created = add_contact(vendor, GB_MOBILE)
    testapp.delete(f"/v1/contacts/{created['id']}", headers=vendor.headers, status=204)
    testapp.get(f"/v1/contacts/{created['id']}", headers=vendor.headers, status=404)
    add_contact(vendor, GB_MOBILE)


@pytest.mark.parametrize(("field", "value"), [
    ("labels", [""]),
    ("labels", ["   "]),
    ("labels", ["x" * 65]),
    ("labels", [f"l{i}" for i in range(51)]),
    ("labels", "vip"),
    ("attributes", {"nested": {"a": 1}}),
    ("attributes", {"list": [1, 2]}),
    ("attributes", {f"k{i}": i for i in range(51)}),
    ("attributes", {"": "empty key"}),
    ("name", "n" * 201),
    ("vendor_id", "00000000-0000-4000-8000-000000000001"),
    ("opted_out", True),
])
def test_bad_fields_are_422_naming_the_field(add_contact, vendor, field, value):
    error = add_contact(vendor, GB_MOBILE, status=422, **{field: value})["error"]
    assert error["code"] == "validation_failed"
    assert error["details"]["fields"][0]["field"].startswith(field)


def test_fifty_labels_of_sixty_four_characters_are_accepted(add_contact, vendor):
    labels = [f"{i:02d}" + "x" * 62 for i in range(50)]
    assert add_contact(vendor, GB_MOBILE, labels=labels)["labels"] == labels
    # The count is checked before duplicates are looked for (issue 15): 53 with 3 repeats is over.
    add_contact(vendor, "+447400123457", labels=labels + labels[:3], status=422)


def test_a_member_reads_and_writes_contacts(testapp, accounts, vendor, add_contact):
    member = accounts.user(vendor.vendor, role=Role.MEMBER)
    created = add_contact(member, GB_MOBILE, name="By a member")
    url = f"/v1/contacts/{created['id']}"
    testapp.patch_json(url, {"name": "Renamed"}, headers=member.headers, status=200)
    testapp.post(f"{url}/opt-out", headers=member.headers, status=200)
    testapp.delete(url, headers=member.headers, status=204)
