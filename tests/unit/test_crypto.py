"""Field encryption and keyed hashing (kloyst.crypto): values are bound to their vendor and field, keys rotate."""

import os
import uuid

import pytest

from kloyst.crypto import DecryptionError, FieldCipher, MobileHasher

VENDOR_A, VENDOR_B = uuid.uuid4(), uuid.uuid4()
OLD, NEW = os.urandom(32), os.urandom(32)


def test_a_value_decrypts_for_its_own_vendor_and_field():
    cipher = FieldCipher({"k1": OLD})
    token = cipher.encrypt("+447400123456", vendor_id=VENDOR_A, field="mobile")
    assert b"447400123456" not in token
    assert cipher.decrypt(token, vendor_id=VENDOR_A, field="mobile") == "+447400123456"


def test_ciphertext_moved_to_another_vendors_row_fails_to_decrypt():
    cipher = FieldCipher({"k1": OLD})
    token = cipher.encrypt("+447400123456", vendor_id=VENDOR_A, field="mobile")
    with pytest.raises(DecryptionError, match="this vendor and field"):
        cipher.decrypt(token, vendor_id=VENDOR_B, field="mobile")


def test_ciphertext_moved_to_another_field_fails_to_decrypt():
    cipher = FieldCipher({"k1": OLD})
    token = cipher.encrypt("Ada", vendor_id=VENDOR_A, field="name")
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, vendor_id=VENDOR_A, field="mobile")


def test_a_tampered_ciphertext_fails_to_decrypt():
    cipher = FieldCipher({"k1": OLD})
    token = bytearray(cipher.encrypt("Ada", vendor_id=VENDOR_A, field="name"))
    token[-1] ^= 1
    with pytest.raises(DecryptionError):
        cipher.decrypt(bytes(token), vendor_id=VENDOR_A, field="name")


def test_the_same_plaintext_encrypts_differently_each_time():
    cipher = FieldCipher({"k1": OLD})
    assert cipher.encrypt("x", vendor_id=VENDOR_A, field="name") != cipher.encrypt("x", vendor_id=VENDOR_A,
                                                                                    field="name")


def test_rotation_the_first_key_encrypts_and_every_key_decrypts():
    old_only = FieldCipher({"old": OLD})
    token = old_only.encrypt("Ada", vendor_id=VENDOR_A, field="name")
    rotating = FieldCipher({"new": NEW, "old": OLD})
    assert rotating.active_kid == "new"
    assert rotating.key_id(token) == "old" and rotating.needs_rotation(token)
    assert rotating.decrypt(token, vendor_id=VENDOR_A, field="name") == "Ada"
    fresh = rotating.encrypt("Ada", vendor_id=VENDOR_A, field="name")
    assert not rotating.needs_rotation(fresh)
    new_only = FieldCipher({"new": NEW})
    assert new_only.decrypt(fresh, vendor_id=VENDOR_A, field="name") == "Ada"
    with pytest.raises(DecryptionError, match="no data key 'old'"):
        new_only.decrypt(token, vendor_id=VENDOR_A, field="name")


@pytest.mark.parametrize("keys", [{}, {"short": b"x" * 16}])
def test_bad_keyrings_are_refused(keys):
    with pytest.raises(ValueError):
        FieldCipher(keys)


def test_garbage_is_not_a_ciphertext():
    with pytest.raises(DecryptionError, match="not a Kloyst ciphertext"):
        FieldCipher({"k1": OLD}).decrypt(b"\x00" * 40, vendor_id=VENDOR_A, field="name")


def test_mobile_hash_is_equal_within_a_vendor_and_different_across_vendors():
    hasher = MobileHasher("a-test-hash-key-of-some-length")
    assert hasher(VENDOR_A, "+447400123456") == hasher(VENDOR_A, "+447400123456")
    assert len(hasher(VENDOR_A, "+447400123456")) == 32
    assert hasher(VENDOR_A, "+447400123456") != hasher(VENDOR_B, "+447400123456")
    assert hasher(VENDOR_A, "+447400123456") != MobileHasher("another-hash-key-entirely")(VENDOR_A, "+447400123456")


def test_a_short_hash_key_is_refused():
    with pytest.raises(ValueError):
        MobileHasher("short")


@pytest.mark.parametrize("key", ["a-test-hash-key-of-some-length", "k" * 64, "long-" * 40])
def test_the_bulk_mobile_hash_is_the_same_hmac(key):
    hasher = MobileHasher(key)
    for vendor in (VENDOR_A, uuid.uuid4()):
        bulk = hasher.for_vendor(vendor)
        for e164 in ("+447400123456", "+919876543210", "+15550100"):
            assert bulk(e164) == hasher(vendor, e164)
