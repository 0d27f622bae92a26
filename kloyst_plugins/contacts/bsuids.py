"""WhatsApp business-scoped user ids (BSUIDs) and usernames: what a valid one looks like, and its country.

Meta's format: a two-letter ISO 3166 country code, a period, and up to 128 letters and digits
(``US.13491208655302741918``); a parent BSUID, shared by the portfolios of a managed business,
has ``ENT.`` after the country (``US.ENT.11815799212886844830``). A user who changes number gets
a new BSUID, so a BSUID is an identity of its own, not an alias of a number.

The country prefix is the only country Kloyst knows for a contact without a number: it prices
the contact's messages (the pricing plugin's market of that country) and fills ``country``.
A prefix phonenumbers does not know leaves the country unknown, which the pricing plugin prices
at its "Other" market rate.
"""

from __future__ import annotations

import re

import phonenumbers

MAX_LENGTH = 140  # "XX." + "ENT." + 128 characters, with room to spare
MAX_USERNAME_LENGTH = 128
_BSUID = re.compile(r"[A-Z]{2}\.[A-Za-z0-9]{1,128}")
_PARENT = re.compile(r"[A-Z]{2}\.ENT\.[A-Za-z0-9]{1,128}")


class InvalidBsuid(ValueError):
    """Not a BSUID; ``str(error)`` says what one looks like."""


def looks_like_bsuid(text: str) -> bool:
    """Whether ``text`` is written like a BSUID or parent BSUID (a number never starts with two letters and a dot)."""
    value = (text or "").strip()
    return bool(_BSUID.fullmatch(value) or _PARENT.fullmatch(value))


def normalize_bsuid(raw: str, *, parent: bool = False) -> str:
    """The BSUID as Meta writes it, trimmed; :class:`InvalidBsuid` with the expected shape otherwise."""
    text = (raw or "").strip()
    if len(text) > MAX_LENGTH or not (_PARENT if parent else _BSUID).fullmatch(text):
        example = "US.ENT.11815799212886844830" if parent else "US.13491208655302741918"
        raise InvalidBsuid(f"not a {'parent ' if parent else ''}business-scoped user id: a two-letter country code, "
                           f"a period{', ENT.' if parent else ''} and up to 128 letters and digits, such as "
                           f"{example}")
    return text


def country_of(bsuid: str | None) -> str | None:
    """The ISO country a BSUID starts with, when phone numbers are known for it; else None."""
    if not bsuid or len(bsuid) < 3 or bsuid[2] != ".":
        return None
    code = bsuid[:2].upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


def clean_username(raw) -> str | None:
    """A WhatsApp username as stored: one line, trimmed, at most 128 characters; None when empty."""
    if raw is None:
        return None
    text = " ".join(str(raw).split())[:MAX_USERNAME_LENGTH]
    return text or None
