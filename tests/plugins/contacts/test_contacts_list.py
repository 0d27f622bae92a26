"""Listing contacts: filters (label, opted-out, country, created range, phone) and cursor pagination."""

import datetime as dt

from sqlalchemy import update

from kloyst_plugins.contacts.models import Contact

NUMBERS = ["+447400100001", "+447400100002", "+12015550101", "+12015550102", "+919876500001"]


def _ids(response):
    return [c["id"] for c in response.json["items"]]


def _seed(add_contact, vendor):
    made = {}
    made["gb1"] = add_contact(vendor, NUMBERS[0], labels=["vip", "uk"])
    made["gb2"] = add_contact(vendor, NUMBERS[1], labels=["uk"])
    made["us1"] = add_contact(vendor, NUMBERS[2], labels=["vip", "us"])
    made["us2"] = add_contact(vendor, NUMBERS[3], labels=[])
    made["in1"] = add_contact(vendor, NUMBERS[4], labels=["vip"])
    return made


def test_label_filter_keeps_contacts_that_have_every_label(testapp, vendor, add_contact):
    made = _seed(add_contact, vendor)
    vip = testapp.get("/v1/contacts", {"label": "vip"}, headers=vendor.headers)
    assert set(_ids(vip)) == {made["gb1"]["id"], made["us1"]["id"], made["in1"]["id"]}
    vip_uk = testapp.get("/v1/contacts?label=vip&label=uk", headers=vendor.headers)
    assert _ids(vip_uk) == [made["gb1"]["id"]]
    assert _ids(testapp.get("/v1/contacts?label=nobody", headers=vendor.headers)) == []


def test_opted_out_and_country_filters(testapp, vendor, add_contact):
    made = _seed(add_contact, vendor)
    testapp.post(f"/v1/contacts/{made['us1']['id']}/opt-out", headers=vendor.headers)
    out = testapp.get("/v1/contacts", {"opted_out": "true"}, headers=vendor.headers)
    assert _ids(out) == [made["us1"]["id"]]
    still_in = testapp.get("/v1/contacts", {"opted_out": "false", "country": "us"}, headers=vendor.headers)
    assert _ids(still_in) == [made["us2"]["id"]]


def test_phone_filter_normalizes_the_number_first(testapp, vendor, add_contact):
    made = _seed(add_contact, vendor)
    found = testapp.get("/v1/contacts", {"phone": "(201) 555-0102", "default_country": "US"}, headers=vendor.headers)
    assert _ids(found) == [made["us2"]["id"]]
    error = testapp.get("/v1/contacts", {"phone": "201 555 0102"}, headers=vendor.headers, status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "phone"


def test_created_range_is_from_inclusive_to_exclusive(testapp, db, vendor, add_contact):
    made = _seed(add_contact, vendor)
    base = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    for offset, key in enumerate(["gb1", "gb2", "us1", "us2", "in1"]):
        db.execute(update(Contact).where(Contact.id == made[key]["id"])
                   .values(created_at=base + dt.timedelta(days=offset)))
    db.commit()
    response = testapp.get("/v1/contacts", {"created_from": "2026-03-02T00:00:00Z", "created_to": "2026-03-04"},
                           headers=vendor.headers)
    assert _ids(response) == [made["us1"]["id"], made["gb2"]["id"]]  # newest first


def test_bad_filters_are_422(testapp, vendor):
    for query in ({"opted_out": "maybe"}, {"created_from": "yesterday"}, {"country": "Narnia"}, {"colour": "red"},
                  {"limit": "500"}, {"cursor": "garbage"}):
        testapp.get("/v1/contacts", query, headers=vendor.headers, status=422)


def test_a_number_is_not_a_time_even_though_it_could_be_read_as_seconds_since_1970(testapp, vendor):
    for value in ("0", "-5", "1700000000", "12.5"):
        error = testapp.get("/v1/contacts", {"created_from": value}, headers=vendor.headers, status=422).json["error"]
        assert "ISO 8601" in error["details"]["fields"][0]["problem"]


def test_a_filter_that_is_not_a_list_given_twice_is_422_rather_than_one_value_winning(testapp, vendor):
    error = testapp.get("/v1/contacts?country=GB&country=US&limit=5&limit=6", headers=vendor.headers,
                        status=422).json["error"]
    assert [f["field"] for f in error["details"]["fields"]] == ["country", "limit"]
    assert "more than once" in error["message"]
    testapp.get("/v1/contacts?label=a&label=b", headers=vendor.headers, status=200)  # a list may repeat


def test_pages_walk_every_contact_once_newest_first(testapp, vendor, add_contact):
    made = [add_contact(vendor, f"+4474001002{i:02d}") for i in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "label": []} | ({"cursor": cursor} if cursor else {})
        page = testapp.get("/v1/contacts", params, headers=vendor.headers).json
        assert len(page["items"]) <= 3
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [c["id"] for c in reversed(made)]


def test_pages_keep_their_filter(testapp, vendor, add_contact):
    tagged = [add_contact(vendor, f"+4474001003{i:02d}", labels=["t"]) for i in range(4)]
    add_contact(vendor, "+447400100399")
    first = testapp.get("/v1/contacts", {"label": "t", "limit": 2}, headers=vendor.headers).json
    second = testapp.get("/v1/contacts", {"label": "t", "limit": 2, "cursor": first["next_cursor"]},
                         headers=vendor.headers).json
    assert [c["id"] for c in first["items"] + second["items"]] == [c["id"] for c in reversed(tagged)]
