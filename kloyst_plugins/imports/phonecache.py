"""Phone normalization for imports: phonenumbers' answers, without phonenumbers' per-call overhead.

phonenumbers costs ~25 µs a number, most of an import's per-row budget, and a cache keyed
by the *shape* of a number (leading digits, length) hits rarely on real files: the digits
that decide validity (US exchanges, GB ranges, mobile prefixes) reach far into the number,
so a key long enough to be right is nearly as unique as the number itself.

So instead of caching verdicts, this module runs **phonenumbers' own algorithm on its own
metadata**, restricted to the one kind of input a contact file is made of — ASCII digits,
an optional leading ``+`` and the usual separators — where most of phonenumbers' work
(extracting a number from free text, extensions, RFC 3966, alpha characters, Unicode
digits) has nothing to do. The steps mirror ``phonenumbers.parse`` and
``phonenumbers.is_valid_number`` line for line (country code extraction with or without
``+``, national prefix and carrier code stripping with the transform rule, the length
tests, the type patterns, the region of a shared calling code); what is precomputed is
compiled regular expressions per region and, per (region, length), one alternation of the
type patterns that apply to that length. The same metadata, the same patterns, the same
order of decisions: the answers are phonenumbers' answers, ~5× cheaper.

Anything outside that input (letters, extensions, ``00``/IDD prefixes, ``+0…``, fewer than
three digits, tabs, over-long text, a national number without a default region) goes to
:func:`kloyst_plugins.contacts.phones.normalize`, i.e. phonenumbers itself.

phonenumbers stays the authority: ``tests/plugins/imports/test_imports_processing_phones.py``
compares this module with it over many generated numbers (IN, US, GB, BR, MX, AR, mobile
variants, trunk and carrier prefixes, invalid and random digits included).
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import (
    COUNTRY_CODE_TO_REGION_CODE,
    REGION_CODE_FOR_NON_GEO_ENTITY,
    ValidationResult,
    _test_number_length,
)

from kloyst_plugins.contacts.api import MAX_RAW_LENGTH, InvalidPhone, Phone, normalize

# Separators phonenumbers treats as punctuation (tabs are not: they go to phonenumbers).
_SEPARATORS = str.maketrans("", "", " -().\u00a0/")
_MIN_DIGITS = 3  # phonenumbers' viability rule: 2 bare digits, or 3+ digits among punctuation
_MAX_NSN = 17  # phonenumbers._MAX_LENGTH_FOR_NSN
_MIN_NSN = 2  # phonenumbers._MIN_LENGTH_FOR_NSN
_NOT_USED = (ValidationResult.TOO_SHORT, ValidationResult.IS_POSSIBLE_LOCAL_ONLY, ValidationResult.INVALID_LENGTH)
_TYPE_FIELDS = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
                "fixed_line")


class _Fallback(Exception):
    """This input leaves the fast path; phonenumbers decides."""


class _Plan:
    """One region's metadata, compiled once: what parse and is_valid_number consult."""

    __slots__ = ("metadata", "cc", "cc_str", "idd", "npfp", "transform", "general", "lengths", "types")

    def __init__(self, metadata) -> None:
        self.metadata = metadata
        self.cc = metadata.country_code
        self.cc_str = str(metadata.country_code)
        self.idd = re.compile(metadata.international_prefix) if metadata.international_prefix else None
        npfp = metadata.national_prefix_for_parsing
        self.npfp = re.compile(npfp) if npfp else None
        self.transform = metadata.national_prefix_transform_rule or None
        pattern = metadata.general_desc.national_number_pattern if metadata.general_desc else None
        self.general = re.compile(pattern) if pattern else None
        self.lengths: dict[int, object] = {}  # length -> _test_number_length verdict
        self.types: dict[int, re.Pattern | None] = {}  # length -> "matches some type" pattern, None: never

    def general_match(self, number: str) -> bool:
        # phonenumbers._match_national_number(number, general_desc, False)
        return self.general is not None and self.general.fullmatch(number) is not None

    def test_length(self, number: str):
        size = len(number)
        verdict = self.lengths.get(size)
        if verdict is None:
            verdict = self.lengths[size] = _test_number_length(number, self.metadata)
        return verdict

    def strip_national_prefix(self, number: str) -> str:
        """phonenumbers._maybe_strip_national_prefix_carrier_code(number, metadata)[1]."""
        if not number or self.npfp is None:
            return number
        match = self.npfp.match(number)
        if match is None:
            return number
        viable = self.general_match(number)
        groups = match.groups()
        if self.transform is None or not groups or groups[-1] is None:
            if viable and not self.general_match(number[match.end():]):
                return number
            return number[match.end():]
        transformed = self.npfp.sub(self.transform, number, count=1)
        if viable and not self.general_match(transformed):
            return number
        return transformed

    def has_type(self, nsn: str) -> bool:
        """phonenumbers._number_type_helper(nsn, metadata) != UNKNOWN."""
        size = len(nsn)
        try:
            pattern = self.types[size]
        except KeyError:
            pattern = self.types[size] = self._types_for(size)
        return pattern is not None and pattern.fullmatch(nsn) is not None

    def _types_for(self, size: int) -> re.Pattern | None:
        metadata = self.metadata
        general = metadata.general_desc
        if general is None or not general.national_number_pattern or \
                (general.possible_length and size not in general.possible_length):
            return None
        fields = _TYPE_FIELDS if metadata.same_mobile_and_fixed_line_pattern else (*_TYPE_FIELDS, "mobile")
        patterns = []
        for name in fields:
            desc = getattr(metadata, name)
            if desc is None or not desc.national_number_pattern:
                continue
            if desc.possible_length and size not in desc.possible_length:
                continue
            patterns.append(desc.national_number_pattern)
        if not patterns:
            return None
        # Valid = the general pattern and at least one type pattern match the whole number.
        return re.compile(f"(?=(?:{general.national_number_pattern})$)(?:" +
                          "|".join(f"(?:{p})" for p in patterns) + ")$")


_plans: dict[tuple, _Plan | None] = {}


def _plan_for_region(region: str) -> _Plan | None:
    key = ("region", region)
    try:
        return _plans[key]
    except KeyError:
        metadata = PhoneMetadata.metadata_for_region(region, None)
        plan = _plans[key] = _Plan(metadata) if metadata is not None else None
        return plan


def _plan_for(cc: int, region: str | None) -> _Plan | None:
    # PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
    key = (cc, region)
    try:
        return _plans[key]
    except KeyError:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
        plan = _plans[key] = _Plan(metadata) if metadata is not None else None
        return plan


def _main_region(cc: int) -> str:
    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc)
    return regions[0] if regions else "ZZ"  # phonenumbers.region_code_for_country_code


def _leading_digits(region: str) -> re.Pattern | None:
    key = ("leading", region)
    try:
        return _plans[key]
    except KeyError:
        metadata = PhoneMetadata.metadata_for_region(region, None)
        value = re.compile(metadata.leading_digits) if metadata is not None and metadata.leading_digits else None
        _plans[key] = value
        return value


def _number_region(cc: int, nsn: str) -> str | None:
    """phonenumbers.region_code_for_number."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if regions is None:
        return None
    if len(regions) == 1:
        return regions[0]
    for region in regions:
        plan = _plan_for_region(region)
        if plan is None:
            continue
        leading = _leading_digits(region)
        if leading is not None:
            if leading.match(nsn):
                return region
        elif plan.has_type(nsn):
            return region
    return None


def _is_valid(cc: int, nsn: str, region: str | None) -> bool:
    """phonenumbers.is_valid_number_for_region(number, region_code_for_number(number))."""
    if region is None:
        return False
    plan = _plan_for(cc, region)
    if plan is None:
        return False
    if region != REGION_CODE_FOR_NON_GEO_ENTITY and (plan.cc != cc or _plan_for_region(region) is None):
        return False
    return plan.has_type(nsn)


def _parse(digits: str, international: bool, default_region: str | None) -> tuple[int, str]:
    """``(calling code, national significant number)`` as phonenumbers.parse finds them, or raises."""
    plan = _plan_for_region(default_region) if default_region else None
    cc = 0
    national = ""
    if international:
        if len(digits) <= _MIN_NSN:
            raise _Fallback  # TOO_SHORT_AFTER_IDD
        if digits[0] == "0":
            raise _Fallback  # "+0…": phonenumbers retries it as a national number
        for size in (1, 2, 3):
            if len(digits) >= size and int(digits[:size]) in COUNTRY_CODE_TO_REGION_CODE:
                cc, national = int(digits[:size]), digits[size:]
                break
        else:
            raise _Fallback  # INVALID_COUNTRY_CODE after a retry without the plus
    else:
        if plan is None:
            raise _Fallback  # no default region: phonenumbers says why
        if plan.idd is not None and plan.idd.match(digits):
            raise _Fallback  # an international prefix ("00 44 …"): rare, phonenumbers handles it
        if digits.startswith(plan.cc_str):
            potential = plan.strip_national_prefix(digits[len(plan.cc_str):])
            if (not plan.general_match(digits) and plan.general_match(potential)) or \
                    plan.test_length(digits) == ValidationResult.TOO_LONG:
                cc, national = plan.cc, potential
    if cc:
        number_region = _main_region(cc)
        if number_region != default_region:
            plan = _plan_for(cc, number_region)
    else:
        national = digits
        cc = plan.cc
    if len(national) < _MIN_NSN:
        raise InvalidPhone("too short")
    if plan is not None:
        potential = plan.strip_national_prefix(national)
        if plan.test_length(potential) not in _NOT_USED:
            national = potential
    if len(national) < _MIN_NSN:  # pragma: no cover - phonenumbers' own "cannot happen" branch
        raise InvalidPhone("too short")
    if len(national) > _MAX_NSN:
        raise InvalidPhone("too long")
    return cc, national


class PhoneCache:
    """Normalizes numbers exactly as :func:`kloyst_plugins.contacts.phones.normalize` does, faster.

    ``hits`` counts numbers answered by the fast path, ``misses`` those handed to phonenumbers.
    (The name is historical: it used to cache verdicts; it keeps only compiled metadata now.)
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self.hits = 0
        self.misses = 0

    def normalize(self, raw: str, default_region: str | None) -> Phone:
        text = (raw or "").strip()
        digits = text.translate(_SEPARATORS)
        international = digits.startswith("+")
        if international:
            digits = digits[1:]
        region = (default_region or "").upper() or None
        if len(text) > MAX_RAW_LENGTH or len(digits) < _MIN_DIGITS or not digits.isdigit() \
                or not digits.isascii():
            self.misses += 1
            return normalize(text, default_region)
        try:
            cc, nsn = _parse(digits, international, region)
        except _Fallback:
            self.misses += 1
            return normalize(text, default_region)
        self.hits += 1
        number_region = _number_region(cc, nsn)
        if not _is_valid(cc, nsn, number_region):
            main = _main_region(cc)
            raise InvalidPhone(f"not a valid number for {main}" if main and main != "ZZ" else "not a valid number")
        return Phone(e164=f"+{cc}{nsn}", region=number_region if number_region and number_region != "ZZ" else None,
                     calling_code=cc)


def region_is_supported(region: str) -> bool:
    return region.upper() in phonenumbers.SUPPORTED_REGIONS
