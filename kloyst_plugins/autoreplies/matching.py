"""Which keyword rule answers a customer's message: normalization, candidate keywords, precedence.

Keywords and messages are compared *normalized*: Unicode case-folded (``"Straße"`` and ``"STRASSE"``
are one word) with every run of white space made one space and the ends trimmed. A rule matches

* ``exact``: when the whole message is its keyword;
* ``prefix``: when the message starts with its keyword as whole words (``"price"`` matches
  ``"price list please"`` but not ``"pricey"``).

The work is bounded whatever the message: a keyword has at most :data:`MAX_KEYWORD` characters, so
only the message's word prefixes up to that length can match, and the database is asked for rules
whose keyword is one of them (an indexed ``IN``), never for every rule of the vendor.

When several rules match, the most specific wins: a rule in the contact's language before a rule
for every language, then an exact match before a prefix, then the longer keyword, then the older rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

MAX_KEYWORD = 64


def normalize(text: str) -> str:
    """``text`` case-folded, white space collapsed to single spaces and trimmed."""
    return " ".join(text.casefold().split())


def candidates(message: str) -> tuple[str, list[str]]:
    """The normalized message (for exact rules) and its word prefixes (for prefix rules), each ≤ MAX_KEYWORD.

    ``"Price list please"`` → ``("price list please", ["price", "price list", "price list please"])``.
    Only the first :data:`MAX_KEYWORD` + 1 characters are looked at.
    """
    stripped = message.strip()
    window = stripped[: MAX_KEYWORD * 8]  # enough characters for MAX_KEYWORD after collapsing spaces
    head = normalize(window)
    cut = len(stripped) > len(window)  # the message goes on past the window: it is longer than any keyword
    prefixes = []
    for index, char in enumerate(head[: MAX_KEYWORD + 1]):
        if char == " ":
            prefixes.append(head[:index])
    # The head is itself a whole-word prefix unless the window cut its last word in two.
    if len(head) <= MAX_KEYWORD and (not cut or window[-1].isspace() or stripped[len(window)].isspace()):
        prefixes.append(head)
    return (head if len(head) <= MAX_KEYWORD and not cut else ""), prefixes


def language_matches(rule_language: str, contact_language: str | None) -> bool:
    """A rule without a language fits everyone; ``"es"`` fits a contact in ``es`` or ``es_MX`` (and ``es-MX``)."""
    if not rule_language:
        return True
    if not contact_language:
        return False
    wanted, have = _language(rule_language), _language(contact_language)
    return have == wanted or have.startswith(wanted + "_")


def _language(code: str) -> str:
    return code.strip().replace("-", "_").lower()


class Rule(Protocol):
    keyword: str
    match: str
    language: str
    created_at: object


def best(rules: Iterable[Rule], message: str, contact_language: str | None) -> Rule | None:
    """The rule that answers ``message``, among ``rules`` (those :func:`candidates` found), or None."""
    exact, prefixes = candidates(message)
    words = set(prefixes)
    fitting = [rule for rule in rules
               if language_matches(rule.language, contact_language)
               and ((rule.match == "exact" and rule.keyword == exact)
                    or (rule.match == "prefix" and rule.keyword in words))]
    if not fitting:
        return None
    return min(fitting, key=lambda r: (r.language == "", r.match != "exact", -len(r.keyword), r.created_at))
