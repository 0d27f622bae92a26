"""The import's phone cache answers exactly what phonenumbers answers (phonenumbers is the oracle)."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from kloyst_plugins.contacts.phones import InvalidPhone, normalize
from kloyst_plugins.imports.phonecache import PhoneCache

REGIONS = ("IN", "US", "GB", "BR", "MX", "AR")


def _random_valid(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    kind = rng.choice((phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE))
    example = phonenumbers.example_number_for_type(region, kind)
    national = str(example.national_number)
    keep = rng.randint(1, 4)
    return phonenumbers.parse(f"+{example.country_code}{national[:keep]}"
                              f"{''.join(rng.choice('0123456789') for _ in national[keep:])}")


def _writings(rng: random.Random, region: str) -> list[str]:
    number = _random_valid(rng, region)
    fmt = phonenumbers.PhoneNumberFormat
    e164 = phonenumbers.format_number(number, fmt.E164)
    national = phonenumbers.format_number(number, fmt.NATIONAL)
    digits = "".join(c for c in national if c.isdigit())
    writings = [e164, phonenumbers.format_number(number, fmt.INTERNATIONAL), national, digits, e164[1:],
                f"00{e164[1:]}", e164[:-1], e164 + "7", digits[:-2], f"({digits[:3]}) {digits[3:]}"]
    cc = str(number.country_code)
    nsn = str(number.national_number)
    if region == "MX":  # the old mobile "1" after +52, and the 044/045 prefixes
        writings += [f"+52 1 {nsn}", f"044 {nsn}", f"045{nsn}", f"01 {nsn}"]
    if region == "AR":  # mobile "9" after +54 and the "15" written after the area code
        writings += [f"+54 9 {nsn}", f"+549{nsn}", f"0{nsn[:2]} 15 {nsn[2:]}", f"011 15{nsn[-8:]}",
                     f"9{nsn}", f"+54 {nsn[:2]} 15 {nsn[2:]}"]
    if region == "BR":  # carrier selection codes and the 8-digit mobiles before the added 9
        writings += [f"0 15 {nsn}", f"0 21 {nsn}", f"0{nsn}", f"+55 {nsn[:2]} {nsn[3:]}", f"{nsn[:2]}{nsn[3:]}"]
    if region == "IN":
        writings += [f"0{nsn}", f"+91 0{nsn}", f"91 {nsn}"]
    if region == "GB":
        writings += ["07700 900123", "+44 7700 900123", f"+44 (0) {nsn}"]
    if region == "US":
        writings += [f"1{nsn}", f"1-{nsn[:3]}-{nsn[3:6]}-{nsn[6:]}", f"+1 {nsn[:3]} 555 {nsn[6:]}"]
    noise = "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 15)))
    return writings + [cc + "0" * rng.randint(1, 9), noise]


def _oracle(raw: str, region: str):
    try:
        return normalize(raw, region)
    except InvalidPhone as exc:
        return f"invalid: {exc}"


def _cached(cache: PhoneCache, raw: str, region: str):
    try:
        return cache.normalize(raw, region)
    except InvalidPhone as exc:
        return f"invalid: {exc}"


@pytest.mark.parametrize("default_region", REGIONS)
def test_cache_matches_phonenumbers_on_generated_numbers(default_region):
    rng = random.Random(f"phones-{default_region}")
    cache = PhoneCache()
    checked = 0
    for _ in range(2500):
        region = rng.choice(REGIONS) if rng.random() < 0.3 else default_region
        for raw in _writings(rng, region):
            assert _cached(cache, raw, default_region) == _oracle(raw, default_region), raw
            checked += 1
    assert checked > 30_000
    assert cache.hits > checked * 0.3  # it is a cache, not a second phonenumbers call (random digits here)


def test_brazil_mexico_argentina_mobile_variants_normalize_as_phonenumbers_says():
    # Mexico abolished the mobile "1" and the 044/045 prefixes in 2019-2020; phonenumbers'
    # metadata follows, so those writings are rejected rather than silently rewritten.
    cases = {
        ("BR", "(11) 96123-4567"): "+5511961234567",
        ("BR", "0 15 11 96123-4567"): "+5511961234567",
        ("BR", "+55 11 96123 4567"): "+5511961234567",
        ("BR", "+55 11 6123 4567"): None,
        ("MX", "55 1234 5678"): "+525512345678",
        ("MX", "+52 55 1234 5678"): "+525512345678",
        ("MX", "+52 1 55 1234 5678"): None,
        ("MX", "044 55 1234 5678"): None,
        ("AR", "011 15 2345-6789"): "+5491123456789",
        ("AR", "+54 9 11 2345 6789"): "+5491123456789",
        ("AR", "+54 11 15 2345 6789"): "+5491123456789",
        ("AR", "11 2345 6789"): "+541123456789",
    }
    cache = PhoneCache()
    for (region, raw), expected in cases.items():
        number = phonenumbers.parse(raw, region)
        oracle = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) \
            if phonenumbers.is_valid_number(number) else None
        assert oracle == expected, (region, raw)
        for _ in range(2):  # the second call answers from the cache
            assert (_cached(cache, raw, region).e164 if expected else _cached(cache, raw, region)) == \
                (expected or _oracle(raw, region)), (region, raw)


def test_gb_drama_range_is_invalid_from_the_cache_too():
    cache = PhoneCache()
    for _ in range(2):
        with pytest.raises(InvalidPhone, match="not a valid number for GB"):
            cache.normalize("07700 900123", "GB")


def test_fast_path_matches_phonenumbers_in_every_region():
    # The fast path re-runs phonenumbers' parse and validity rules on its metadata: every
    # supported region, written in every way _writings knows, plus random digit strings with
    # and without "+", against every default region.
    rng = random.Random("phones-all-regions")
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    cache = PhoneCache()
    checked = 0
    for _ in range(3000):
        default_region = rng.choice(regions)
        region = rng.choice(regions) if rng.random() < 0.5 else default_region
        if not all(phonenumbers.example_number_for_type(region, kind) for kind in (
                phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)):
            region = default_region = "IN"  # a few territories have no example numbers to start from
        writings = _writings(rng, region)
        for _ in range(2):
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 18)))
            writings += [digits, "+" + digits]
        for raw in writings:
            assert _cached(cache, raw, default_region) == _oracle(raw, default_region), (default_region, raw)
            checked += 1
    assert cache.hits > checked * 0.8
