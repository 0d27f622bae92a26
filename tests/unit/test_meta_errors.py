"""Every error code in docs/meta/error-codes.md is classified, and Meta's envelope is parsed whatever arrives.

The codes come from that document itself: a code added to its table without a row in
``kloyst.meta.errors`` fails ``test_every_documented_code_has_a_classification``.
"""

import json
import re
from pathlib import Path

import pytest

from kloyst.meta.errors import ErrorKind, MetaError, classify

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "meta" / "error-codes.md"
CODE = re.compile(r"(\d+)\s*[–-]\s*(\d+)|(\d+)xxx|(\d+)")


def _expand(cell: str) -> list[int]:
    codes: list[int] = []
    for first, last, family, single in CODE.findall(cell):
        if first:
            lo, hi = int(first), int(last)
            codes += sorted({lo, (lo + hi) // 2, hi})
        elif family:
            codes += [int(family) * 1000, int(family) * 1000 + 500, int(family) * 1000 + 999]
        else:
            codes.append(int(single))
    return codes


def documented_codes() -> list[tuple[int, str, str]]:
    """(code, meaning, retry advice) for every code of the §3.3 table, ranges and families expanded."""
    text = DOC.read_text()
    section = text[text.index("### 3.3"):]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0][:1].isdigit():
            continue
        code_cell, meaning, retry = cells
        codes = _expand(code_cell)
        # Some rows name further ranges in the meaning ("139000–139004 | Flow errors; 139100–139103 …").
        codes += [code for code in _expand(" ".join(re.findall(r"\b\d{6}\s*[–-]\s*\d{6}\b", meaning)))]
        rows += [(code, meaning, retry) for code in codes]
    return rows


DOCUMENTED = documented_codes()


def test_the_document_table_is_found_and_parsed():
    codes = {code for code, _, _ in DOCUMENTED}
    assert len(DOCUMENTED) > 60
    assert {0, 4, 100, 190, 249, 368, 80007, 130429, 131047, 131050, 131056, 132000, 132001, 138500,
            139002, 139101} <= codes


@pytest.mark.parametrize(("code", "meaning", "retry"), DOCUMENTED, ids=[str(c) for c, _, _ in DOCUMENTED])
def test_every_documented_code_has_a_classification(code, meaning, retry):
    found = classify(code, http_status=400)
    assert found.documented, f"code {code} ({meaning}) is in docs/meta/error-codes.md but not classified"
    assert found.reason
    advice = retry.lower()
    if "/" in advice:  # one row, several codes, different advice ("no / later"): checked below by name
        return
    if advice.startswith("yes"):
        assert found.kind.retryable, f"{code}: the doc says retry ({retry}); classified {found.kind}"
    elif re.match(r"no\b(?! immediate)", advice):
        assert not found.kind.retryable, f"{code}: the doc says do not retry ({retry}); classified {found.kind}"


@pytest.mark.parametrize(("code", "kind"), [
    (1, ErrorKind.TRANSIENT), (2, ErrorKind.TRANSIENT), (131000, ErrorKind.TRANSIENT),
    (131016, ErrorKind.TRANSIENT), (131057, ErrorKind.TRANSIENT),
    (4, ErrorKind.RATE_LIMITED), (17, ErrorKind.RATE_LIMITED), (80007, ErrorKind.RATE_LIMITED),
    (130429, ErrorKind.RATE_LIMITED), (131056, ErrorKind.RATE_LIMITED), (133016, ErrorKind.RATE_LIMITED),
    (131048, ErrorKind.RATE_LIMITED), (132069, ErrorKind.RATE_LIMITED),
    (100, ErrorKind.PERMANENT), (33, ErrorKind.PERMANENT), (131026, ErrorKind.PERMANENT),
    (131047, ErrorKind.PERMANENT), (131049, ErrorKind.PERMANENT), (131050, ErrorKind.PERMANENT),
    (132000, ErrorKind.PERMANENT), (132001, ErrorKind.PERMANENT), (132015, ErrorKind.PERMANENT),
    (132068, ErrorKind.PERMANENT), (368, ErrorKind.PERMANENT), (131031, ErrorKind.PERMANENT),
    (0, ErrorKind.AUTH), (3, ErrorKind.AUTH), (10, ErrorKind.AUTH), (190, ErrorKind.AUTH), (200, ErrorKind.AUTH),
    (299, ErrorKind.AUTH),
])
def test_the_outbox_handling_of_each_class(code, kind):
    assert classify(code).kind is kind


def test_rate_limits_carry_the_shortest_sensible_wait():
    assert classify(130429).min_delay_seconds == 1
    assert classify(131056).min_delay_seconds == 6  # about one message per 6 s to the same user


@pytest.mark.parametrize(("status", "kind"), [
    (500, ErrorKind.TRANSIENT), (502, ErrorKind.TRANSIENT), (503, ErrorKind.TRANSIENT),
    (429, ErrorKind.RATE_LIMITED), (400, ErrorKind.PERMANENT), (404, ErrorKind.PERMANENT),
])
def test_unknown_codes_are_decided_by_the_http_status_and_say_so(status, kind):
    found = classify(987654, http_status=status)
    assert found.kind is kind
    assert not found.documented
    assert "not in Kloyst's table" in found.reason


def test_meta_is_transient_flag_makes_an_otherwise_permanent_error_retryable():
    assert classify(987654, 400, is_transient=True).kind is ErrorKind.TRANSIENT
    assert classify(100, 400, is_transient=True).kind is ErrorKind.TRANSIENT
    assert classify(130429, 429, is_transient=True).kind is ErrorKind.RATE_LIMITED


def test_the_envelope_is_parsed_with_string_codes_subcode_details_and_trace():
    body = json.dumps({"error": {
        "message": "(#131056) (Business Account, Consumer Account) pair rate limit hit", "type": "OAuthException",
        "code": "131056", "error_subcode": "2494055", "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
        "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because there were "
                       "too many messages sent from this phone number to the same phone number"}}}).encode()
    error = MetaError.from_response(400, body)
    assert (error.http_status, error.code, error.subcode, error.type) == (400, 131056, 2494055, "OAuthException")
    assert error.details.startswith("Message failed to send")
    assert error.fbtrace_id == "Az8or2yhqkZfEZ-_4Qn_Bam"
    assert error.kind is ErrorKind.RATE_LIMITED and error.retryable
    assert "131056" in str(error) and "rate_limited" in str(error)


def test_template_api_error_data_as_a_plain_string_becomes_the_details():
    body = b'{"error": {"message": "Invalid parameter", "code": 100, "error_subcode": 2388043, ' \
           b'"error_data": "Message template already exists", "error_user_title": "Duplicate", ' \
           b'"error_user_msg": "Choose another name"}}'
    error = MetaError.from_response(400, body)
    assert error.details == "Message template already exists"
    assert (error.user_title, error.user_message) == ("Duplicate", "Choose another name")
    assert error.kind is ErrorKind.PERMANENT


@pytest.mark.parametrize(("status", "body", "kind"), [
    (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", ErrorKind.TRANSIENT),
    (503, b"", ErrorKind.TRANSIENT),
    (500, b'{"error": "not an object"}', ErrorKind.TRANSIENT),
    (400, b'{"error": {"message": "trunc', ErrorKind.PERMANENT),
    (429, b"slow down", ErrorKind.RATE_LIMITED),
])
def test_bodies_that_are_not_meta_envelopes_still_give_a_classified_error(status, body, kind):
    error = MetaError.from_response(status, body, fbtrace_id="header-trace")
    assert error.code is None and error.http_status == status
    assert error.kind is kind
    assert error.fbtrace_id == "header-trace"
    assert "no Meta error envelope" in error.message


def test_a_network_failure_is_a_transient_meta_error():
    error = MetaError.network(TimeoutError("read timed out"), maybe_accepted=True)
    assert error.is_network and error.type == "network"
    assert error.kind is ErrorKind.TRANSIENT and error.maybe_accepted
    assert error.code is None and error.http_status is None
