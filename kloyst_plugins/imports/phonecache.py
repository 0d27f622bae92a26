"""Phone normalization for imports: phonenumbers' answers, cached by the shape of the number.

phonenumbers costs ~25 µs a number, a large part of an import's per-row budget. Its
verdict for a number depends on the calling code, the leading national digits (which
select the numbering plan's range, trunk prefix and mobile-variant rules) and the length,
not on the trailing subscriber digits. So the cache is keyed by
``(mode, leading digits, length)`` and holds what phonenumbers said for the first number
of that shape: invalid (and why), or valid with its region and how the E.164 form is made
from the raw digits (``"+" + calling code + digits[strip:]``). A shape whose E.164 form is
not such a plain rewrite (phonenumbers inserted or moved digits) is marked ``SLOW`` and
every number of it goes to phonenumbers. Anything that is not plain digits with the usual
separators (letters, extensions, ``00`` prefixes…) also goes to phonenumbers.

phonenumbers stays the authority: ``tests/plugins/imports/test_imports_processing_phones.py``
compares this cache with it over many generated numbers (IN, US, GB, BR, MX, AR, mobile
variants included).
"""

from __future__ import annotations

import re

import phonenumbers

from kloyst_plugins.contacts.phones import InvalidPhone, Phone, normalize

# How many leading digits select a verdict. Numbering plans decide validity within the first
# 6 national digits for the regions we measured (US NXX exchanges, GB drama ranges, the
# Argentinian and Mexican mobile rules); one more is kept for a trunk prefix, and the calling
# code is part of the international key.
NATIONAL_KEY_DIGITS = 7
INTERNATIONAL_KEY_DIGITS = 9

_SEPARATORS = str.maketrans("", "", " -().\u00a0\t/")
_SLOW = object()
_NEVER = re.compile(r"(?!)")


class PhoneCache:
    """Normalizes numbers for one default region (a job's, or a row's country column)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._verdicts: dict[tuple, object] = {}
        self._max = max_entries
        self._idd: dict[str, re.Pattern] = {}
        self.hits = 0
        self.misses = 0

    def normalize(self, raw: str, default_region: str | None) -> Phone:
        text = (raw or "").strip()
        digits = text.translate(_SEPARATORS)
        international = digits.startswith("+")
        if international:
            digits = digits[1:]
        if not digits.isdigit() or not digits.isascii() or len(digits) > 17:
            return normalize(text, default_region)
        if international:
            key = ("+", digits[:INTERNATIONAL_KEY_DIGITS], len(digits))
        else:
            if not default_region or self._starts_with_idd(digits, default_region):
                return normalize(text, default_region)
            key = (default_region, digits[:NATIONAL_KEY_DIGITS], len(digits))
        verdict = self._verdicts.get(key)
        if verdict is None:
            self.misses += 1
            return self._learn(key, text, digits, default_region)
        self.hits += 1
        if verdict is _SLOW:
            return normalize(text, default_region)
        if isinstance(verdict, str):
            raise InvalidPhone(verdict)
        strip, calling_code, region = verdict
        return Phone(e164=f"+{calling_code}{digits[strip:]}", region=region, calling_code=calling_code)

    def _starts_with_idd(self, digits: str, region: str) -> bool:
        # "00 44 …" dialled from India is international, and its key would be too short to
        # hold the calling code and the national digits: such numbers go to phonenumbers.
        pattern = self._idd.get(region)
        if pattern is None:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper())
            prefix = metadata.international_prefix if metadata is not None else None
            pattern = self._idd[region] = re.compile(prefix) if prefix else _NEVER
        return pattern.match(digits) is not None

    def _learn(self, key: tuple, text: str, digits: str, default_region: str | None) -> Phone:
        if len(self._verdicts) >= self._max:
            self._verdicts.clear()
        try:
            phone = normalize(text, default_region)
        except InvalidPhone as exc:
            self._verdicts[key] = str(exc)
            raise
        self._verdicts[key] = _rewrite(phone, digits, international=key[0] == "+")
        return phone


def _rewrite(phone: Phone, digits: str, *, international: bool):
    """``(strip, calling code, region)`` when E.164 is the raw digits minus a prefix, else ``_SLOW``."""
    code = str(phone.calling_code)
    national = phone.e164[1 + len(code):]
    if international:
        return (len(code), phone.calling_code, phone.region) if digits == code + national else _SLOW
    for strip in range(0, 4):
        # A stripped trunk prefix ("0") or a calling code written without "+" ("91…"): both lie
        # inside the key's leading digits, so every number of the shape strips the same way.
        if digits[strip:] == national:
            return strip, phone.calling_code, phone.region
    return _SLOW


def region_is_supported(region: str) -> bool:
    return region.upper() in phonenumbers.SUPPORTED_REGIONS
