"""Password hashing: Argon2id, a constant-cost answer for accounts without a hash, and length rules."""

from __future__ import annotations

import pytest

from kloyst.auth import passwords
from kloyst.auth.passwords import hash_password, needs_rehash, password_problem, verify_password


def test_a_hash_verifies_its_own_password_only():
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery staple")
    assert not verify_password(stored, "correct horse battery stapler")


@pytest.mark.parametrize("missing", [None, ""])
def test_no_hash_never_verifies_not_even_the_timing_equaliser(missing, monkeypatch):
    calls = []
    real = passwords._hasher

    class Spy:
        def verify(self, stored, password):
            calls.append(stored)
            return real.verify(stored, password)

    monkeypatch.setattr(passwords, "_hasher", Spy())
    assert not verify_password(missing, "kloyst-timing-equaliser")
    assert calls == [passwords._DUMMY_HASH]  # the same Argon2 work as a real check


def test_a_corrupt_hash_is_a_mismatch_not_a_crash():
    assert not verify_password("$argon2id$garbage", "anything at all")
    assert not verify_password("plaintext-password", "plaintext-password")


def test_fresh_hashes_need_no_rehash():
    assert not needs_rehash(hash_password("correct horse battery staple"))


@pytest.mark.parametrize("candidate, acceptable", [
    ("a" * (passwords.MIN_LENGTH - 1), False),
    ("a" * passwords.MIN_LENGTH, True),
    ("a" * passwords.MAX_LENGTH, True),
    ("a" * (passwords.MAX_LENGTH + 1), False),
    (" " * 20, False),
])
def test_password_rules_are_about_length(candidate, acceptable):
    assert (password_problem(candidate) is None) is acceptable
