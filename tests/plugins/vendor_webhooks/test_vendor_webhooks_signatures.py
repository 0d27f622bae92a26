"""verify_signature, as a receiver uses it: Stripe's scheme, a replayed timestamp refused, rotation overlap."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from kloyst_plugins.vendor_webhooks.api import sign, SignatureError, verify_signature

BODY = b'{"id":"evt_1","type":"ContactCreated"}'


def test_a_signature_made_with_the_secret_over_timestamp_and_raw_body_verifies():
    header = sign(["whsec_a"], BODY, timestamp=1_800_000_000)
    expected = hmac.new(b"whsec_a", b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={expected}"
    assert verify_signature("whsec_a", header, BODY, now=1_800_000_010) == 1_800_000_000


def test_a_replayed_request_is_refused_once_its_timestamp_is_older_than_the_tolerance():
    header = sign(["whsec_a"], BODY, timestamp=int(time.time()) - 301)
    with pytest.raises(SignatureError, match="replayed or delayed"):
        verify_signature("whsec_a", header, BODY)
    assert verify_signature("whsec_a", header, BODY, tolerance=600)


def test_a_changed_body_another_secret_or_a_re_dated_header_is_refused():
    header = sign(["whsec_a"], BODY)
    with pytest.raises(SignatureError, match="matches no signature"):
        verify_signature("whsec_a", header, BODY + b" ")
    with pytest.raises(SignatureError, match="matches no signature"):
        verify_signature("whsec_b", header, BODY)
    stamp, signature = header.split(",")
    with pytest.raises(SignatureError, match="matches no signature"):
        verify_signature("whsec_a", f"t={int(stamp[2:]) + 1},{signature}", BODY)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=1", "t=soon,v1=abc"])
def test_a_missing_or_malformed_header_is_refused(header):
    with pytest.raises(SignatureError):
        verify_signature("whsec_a", header, BODY)


def test_after_a_rotation_both_the_new_and_the_previous_secret_verify():
    header = sign(["whsec_new", "whsec_old"], BODY)
    assert verify_signature("whsec_new", header, BODY) and verify_signature("whsec_old", header, BODY)
