"""Text that leaves Kloyst as CSV is opened in spreadsheets: neutralize anything that would run as a formula.

OWASP's CSV injection advice: a field starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage
return or a NUL can be executed by Excel or LibreOffice. Every CSV export (contacts, rejected
import rows, wallet statements, campaign recipients) passes its free-text fields through
:func:`csv_safe`, which prefixes such a field with ``'`` so it is shown as typed.
"""

from __future__ import annotations

_DANGEROUS_FIRST = ("=", "+", "-", "@", "\t", "\r", "\0")


def csv_safe(value: str) -> str:
    """Neutralize a field a spreadsheet would run as a formula: a leading ``'``."""
    return "'" + value if value.startswith(_DANGEROUS_FIRST) else value
