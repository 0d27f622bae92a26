"""Text that leaves Kloyst as CSV is opened in spreadsheets: neutralize anything that would run as a formula.

OWASP's CSV injection advice: a field starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage
return or a NUL can be executed by Excel or LibreOffice. Every CSV export (contacts, rejected
import rows, wallet statements, campaign recipients) passes its free-text fields through
:func:`csv_safe`, which prefixes such a field with ``'`` so it is shown as typed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Container, Iterable, Iterator, Sequence

_DANGEROUS_FIRST = ("=", "+", "-", "@", "\t", "\r", "\0")


def csv_safe(value: str) -> str:
    """Neutralize a field a spreadsheet would run as a formula: a leading ``'``."""
    return "'" + value if value.startswith(_DANGEROUS_FIRST) else value


def csv_chunks(header: Sequence[str], rows: Iterable[Sequence], *, guarded: Container[str] | None = None,
               flush_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """RFC 4180 CSV (CRLF, quoted when needed) in UTF-8 with a BOM, so spreadsheets detect the encoding.

    A generator that yields about every ``flush_bytes``: an export of a million rows streams
    instead of being built in memory. Fields of the ``guarded`` columns (all of them when None)
    go through :func:`csv_safe`; leave out columns of numbers, where a leading ``-`` is a sign.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")
    writer.writerow(header)
    guard = [guarded is None or name in guarded for name in header]
    for row in rows:
        writer.writerow([csv_safe(value) if safe and isinstance(value, str) else value
                         for safe, value in zip(guard, row)])
        if buffer.tell() >= flush_bytes:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")
