"""Phone numbers: raw text in, E.164 out, or a reason the vendor can act on.

phonenumbers is the reference (Google's libphonenumber metadata): it knows trunk
prefixes, the Argentinian/Mexican/Brazilian mobile variants and which ranges are real.

A spreadsheet cell may hold several numbers: Google Contacts exports a second phone in the
same cell after ``:::``, other tools join them with ``;``, ``|`` or a line break.
:func:`first_valid` takes the first valid one and returns the others, so an import gives the
contact a number instead of rejecting the row, and loses none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

MAX_RAW_LENGTH = 64
# What joins several numbers in one cell. Not "," nor "/": both appear inside single numbers
# ("020/1234567", dialling pauses), and phonenumbers reads them as such.
NUMBER_SEPARATORS = re.compile(r":::|[;|\r\n]")
MAX_NUMBERS_PER_CELL = 10


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


def first_valid(raw: str, default_region: str | None,
                normalize: Callable[[str, str | None], Phone] = normalize) -> tuple[Phone, tuple[str, ...]]:
    """The first valid number of a cell that may hold several (see the module docstring), and the cell's
    other numbers in order: in E.164 when valid, as written otherwise, each once, the chosen one left out.

    ``normalize`` is :func:`normalize` or a drop-in with the same answers (the imports' phone cache). A cell
    with one number is exactly ``normalize``'s answer; with none valid, :class:`InvalidPhone` says so.
    """
    text = raw or ""
    if NUMBER_SEPARATORS.search(text) is None:
        return normalize(text, default_region), ()
    parts = [part.strip() for part in NUMBER_SEPARATORS.split(text)]
    parts = [part for part in parts if part]
    if len(parts) > MAX_NUMBERS_PER_CELL:  # bounds the parsing one cell can cost
        raise InvalidPhone(f"{len(parts)} numbers in one cell; at most {MAX_NUMBERS_PER_CELL} are read")
    if len(parts) <= 1:
        return normalize(parts[0] if parts else "", default_region), ()
    written: list[str] = []
    chosen: Phone | None = None
    first_problem = None
    for part in parts:
        try:
            phone = normalize(part, default_region)
        except InvalidPhone as exc:
            first_problem = first_problem or exc
            written.append(part)
            continue
        if chosen is None:
            chosen = phone
        written.append(phone.e164)
    if chosen is None:
        raise InvalidPhone(f"none of the {len(parts)} numbers in the cell is valid (the first: {first_problem})")
    return chosen, tuple(other for other in dict.fromkeys(written) if other != chosen.e164)
