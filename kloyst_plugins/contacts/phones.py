"""Phone numbers: raw text in, E.164 out, or a reason the vendor can act on.

phonenumbers is the reference (Google's libphonenumber metadata): it knows trunk
prefixes, the Argentinian/Mexican/Brazilian mobile variants and which ranges are real.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

MAX_RAW_LENGTH = 64


class InvalidPhone(ValueError):
    """The text is not a usable number; ``str(error)`` says why in words a vendor understands."""


@dataclass(frozen=True)
class Phone:
    e164: str
    region: str | None  # ISO 3166-1 alpha-2, None for non-geographic numbers
    calling_code: int


_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code; write the number with + and its country "
                                               "code, or choose a default country",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}


def normalize(raw: str, default_region: str | None = None) -> Phone:
    """Parse ``raw`` (national or international format) and return it in E.164."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("empty")
    if len(text) > MAX_RAW_LENGTH:
        raise InvalidPhone("too long")
    try:
        number = phonenumbers.parse(text, (default_region or "").upper() or None)
    except NumberParseException as exc:
        raise InvalidPhone(_PARSE_REASONS.get(exc.error_type, "not a phone number")) from None
    if not phonenumbers.is_valid_number(number):
        region = phonenumbers.region_code_for_country_code(number.country_code)
        raise InvalidPhone(f"not a valid number for {region}" if region and region != "ZZ" else "not a valid number")
    region = phonenumbers.region_code_for_number(number)
    return Phone(e164=phonenumbers.format_number(number, PhoneNumberFormat.E164),
                 region=region if region and region != "ZZ" else None, calling_code=number.country_code)


def mask(raw: str) -> str:
    """A raw value as it may appear in error reports: all but the last 3 characters hidden."""
    text = (raw or "").strip()
    if len(text) <= 3:
        return "*" * len(text)
    return "*" * (len(text) - 3) + text[-3:]
