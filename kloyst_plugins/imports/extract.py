"""Header extraction: what a clean file contains, and how it splits into chunks.

Runs in a worker, only after the virus scan said clean (and, for XLSX, after the zip guard).
One pass over the file finds the encoding, the delimiter, the header row, five sample
rows, the number of data rows, and where each chunk of ``imports.chunk_rows`` rows starts.

**The contract the chunk reader relies on** (both sides use the helpers here):

* A *data row* is a record after the header row that is not blank (:func:`is_blank_row`:
  every cell empty after stripping whitespace). Blank rows are skipped and never counted,
  and the header row is the first non-blank record. ``first_row`` is the 1-based number of
  a chunk's first data row; the chunk holds ``row_count`` data rows.
* CSV: ``job.encoding`` is one of ``utf-8``, ``utf-8-sig``, ``utf-16-le``, ``utf-16-be``,
  ``cp1252`` (a UTF-16 BOM is resolved to its byte order, so decoding can start anywhere);
  ``job.delimiter`` is one of ``, ; \\t |``. ``chunk.byte_offset`` is the offset in the
  *raw file bytes* where the chunk's first record starts (always after the BOM, on a code
  unit boundary). :func:`iter_csv_records` from ``byte_offset`` yields exactly that chunk's
  records first; a reader that prefers the stdlib can ``seek(byte_offset)`` and wrap the
  file in ``io.TextIOWrapper(f, encoding=job.encoding, newline="")`` for ``csv.reader``
  (``strict=True``), skipping blank rows.
* XLSX: the first worksheet, read with python-calamine, cells turned into strings by
  :func:`cell_text` (integral numbers without ``.0``, so phone numbers stored as numbers
  survive); ``byte_offset``, ``encoding`` and ``delimiter`` are None. :func:`iter_xlsx_rows`
  yields the data rows in order; a reader skips ``first_row - 1`` of them.
* Headers are made usable as mapping keys: stripped, capped at 255 characters, an empty
  header becomes ``column_<n>`` and a repeated one ``<name> (2)``. More than 200 columns,
  an empty file or a file with no data rows fails the job with a message.

openpyxl is not used to read imports, but it is installed (exports use it), so the
import refuses to start unless it would parse XML through defusedxml.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import openpyxl

from kloyst_plugins.imports.sniff import bom_encoding

if openpyxl.DEFUSEDXML is not True:  # not an assert: it must hold under python -O too
    raise ImportError("openpyxl is not using defusedxml (is OPENPYXL_DEFUSEDXML=False set?); refusing to parse "
                      "spreadsheets without it")

MAX_COLUMNS = 200
MAX_HEADER_CHARS = 255
MAX_SAMPLE_CELL_CHARS = 500
SAMPLE_ROWS = 5
DELIMITERS = ",;\t|"
SNIFF_CHARS = 32 * 1024
SNIFF_ROWS = 50
BLOCK = 1024 * 1024


class ExtractionError(ValueError):
    """The file cannot be imported; the message is shown to the vendor on the failed job."""


@dataclass
class ChunkPlan:
    index: int
    first_row: int
    row_count: int
    byte_offset: int | None


@dataclass
class Extracted:
    headers: list[str]
    sample_rows: list[list[str]]
    row_count: int
    chunks: list[ChunkPlan]
    encoding: str | None = None
    delimiter: str | None = None
    notes: list[str] = field(default_factory=list)


def is_blank_row(row: list) -> bool:
    return not any(str(cell).strip() for cell in row)


def cell_text(value) -> str:
    """An XLSX cell as the string an import sees."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < sys.maxsize else repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def detect_encoding(path) -> tuple[str, int]:
    """``(encoding, bytes to skip at the start)``: BOM, else strict UTF-8 over the whole file, else cp1252."""
    with open(path, "rb") as handle:
        encoding, skip = bom_encoding(handle.read(4))
        if encoding:
            return encoding, skip
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        try:
            while data := handle.read(BLOCK):
                decoder.decode(data)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252", 0
    return "utf-8", 0


def _newline(encoding: str) -> tuple[bytes, int]:
    if encoding == "utf-16-le":
        return b"\n\x00", 2
    if encoding == "utf-16-be":
        return b"\x00\n", 2
    return b"\n", 1


MAX_LINE_BYTES = 1024 * 1024  # a longer line is no contact row; it would cost a worker its memory


def _line_too_long() -> ExtractionError:
    return ExtractionError(f"a line of the file is longer than {MAX_LINE_BYTES // 1024} KiB; "
                           "this is not a contact list")


def _raw_lines(handle, start: int, encoding: str) -> Iterator[tuple[int, bytes]]:
    """``(offset, raw line including its newline)`` from ``start``; newlines found on code-unit boundaries.

    A line over ``MAX_LINE_BYTES`` is refused: a 30 MB line of commas parses into millions of
    fields and hundreds of megabytes, while no contact row comes near a megabyte.
    """
    newline, unit = _newline(encoding)
    handle.seek(start)
    offset, buffer = start, b""
    while True:
        block = handle.read(BLOCK)
        if not block:
            break
        buffer += block
        position = 0
        while True:
            index = buffer.find(newline, position)
            while index != -1 and (index - position) % unit:  # a 0x0A byte inside another UTF-16 unit
                index = buffer.find(newline, index + 1)
            if index == -1:
                break
            end = index + len(newline)
            if end - position > MAX_LINE_BYTES:
                raise _line_too_long()
            yield offset, buffer[position:end]
            offset += end - position
            position = end
        buffer = buffer[position:]
        if len(buffer) > MAX_LINE_BYTES:  # a line still without its end
            raise _line_too_long()
    if buffer:
        yield offset, buffer


def iter_csv_records(path, encoding: str, delimiter: str, start: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """``(byte offset where the record starts, fields)`` for every CSV record from ``start`` (default: after the BOM).

    Blank records are yielded too (as ``[]`` or empty fields); callers skip them with :func:`is_blank_row`.
    Raises :class:`ExtractionError` on undecodable bytes, NUL characters or malformed CSV.
    """
    if start is None:
        with open(path, "rb") as handle:
            start = bom_encoding(handle.read(4))[1]
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    state = {"next": start, "line": 0}

    with open(path, "rb") as handle:
        def lines() -> Iterator[str]:
            for offset, raw in _raw_lines(handle, start, encoding):
                state["next"] = offset + len(raw)
                state["line"] += 1
                try:
                    text = raw.decode(codec)
                except UnicodeDecodeError as exc:
                    raise ExtractionError(f"line {state['line']} is not valid {encoding} text ({exc.reason})") from None
                if "\0" in text:
                    raise ExtractionError(f"line {state['line']} contains a NUL character; this is not a CSV file")
                yield text

        reader = csv.reader(lines(), delimiter=delimiter, strict=True)
        while True:
            record_start = state["next"]
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise ExtractionError(f"line {state['line']} is not valid CSV: {exc}") from None
            yield record_start, row


def _consistency(text: str, delimiter: str) -> tuple[float, int]:
    """``(share of sample rows with the header's field count, header field count)``; (0, 0) if unusable."""
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
                if not is_blank_row(r)][:SNIFF_ROWS]
    except csv.Error:
        return 0.0, 0
    if not rows or len(rows[0]) < 2:
        return 0.0, 0
    return sum(len(r) == len(rows[0]) for r in rows) / len(rows), len(rows[0])


def detect_delimiter(path, encoding: str, start: int) -> str:
    """One of ``, ; \t |`` for the first lines; ``,`` when none splits them (a one-column file).

    csv.Sniffer proposes; the proposal stands unless another candidate splits the sample
    into more consistent rows (the Sniffer is easily misled by a delimiter inside quotes).
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        head = handle.read(SNIFF_CHARS * 4)
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    text = codecs.getincrementaldecoder(codec)("replace").decode(head, final=False)[:SNIFF_CHARS]
    if "\n" in text and len(head) >= SNIFF_CHARS:
        text = text[: text.rindex("\n") + 1]  # whole lines only
    try:
        proposed = csv.Sniffer().sniff(text, delimiters=DELIMITERS).delimiter
    except csv.Error:
        proposed = ","
    scores = {d: _consistency(text, d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: scores[d])  # ties go to the earlier candidate
    if scores[best] > scores[proposed]:
        return best
    return proposed if scores[proposed][1] else ","


def clean_headers(raw: list[str]) -> list[str]:
    if len(raw) > MAX_COLUMNS:
        raise ExtractionError(f"the header row has {len(raw)} columns; at most {MAX_COLUMNS} are supported")
    headers: list[str] = []
    seen: set[str] = set()
    for index, cell in enumerate(raw, start=1):
        name = str(cell).strip()[:MAX_HEADER_CHARS] or f"column_{index}"
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name} ({n})"
        seen.add(candidate)
        headers.append(candidate)
    return headers


class _Planner:
    """Counts data rows, keeps the samples, and cuts chunks of ``chunk_rows``."""

    def __init__(self, chunk_rows: int) -> None:
        self.chunk_rows = max(1, int(chunk_rows))
        self.headers: list[str] | None = None
        self.samples: list[list[str]] = []
        self.rows = 0
        self.chunks: list[ChunkPlan] = []

    def add(self, row: list[str], offset: int | None) -> None:
        if is_blank_row(row):
            return
        if self.headers is None:
            self.headers = clean_headers(row)
            return
        self.rows += 1
        if len(self.samples) < SAMPLE_ROWS:
            self.samples.append([str(c)[:MAX_SAMPLE_CELL_CHARS] for c in row[:MAX_COLUMNS]])
        if (self.rows - 1) % self.chunk_rows == 0:
            self.chunks.append(ChunkPlan(len(self.chunks), self.rows, 0, offset))
        self.chunks[-1].row_count += 1

    def result(self, **kw) -> Extracted:
        if self.headers is None:
            raise ExtractionError("the file is empty: it has no header row and no data rows")
        if self.rows == 0:
            raise ExtractionError("the file has a header row but 0 data rows")
        return Extracted(headers=self.headers, sample_rows=self.samples, row_count=self.rows, chunks=self.chunks, **kw)


def extract_csv(path, chunk_rows: int) -> Extracted:
    encoding, skip = detect_encoding(path)
    delimiter = detect_delimiter(path, encoding, skip)
    planner = _Planner(chunk_rows)
    for offset, row in iter_csv_records(path, encoding, delimiter, skip):
        planner.add(row, offset)
    return planner.result(encoding=encoding, delimiter=delimiter)


def iter_xlsx_rows(path, *, include_header: bool = False) -> Iterator[list[str]]:
    """The first worksheet's non-blank rows as strings (the header row only when ``include_header``)."""
    import python_calamine

    try:
        workbook = python_calamine.CalamineWorkbook.from_path(str(path))
        try:
            rows = workbook.get_sheet_by_index(0).iter_rows()
            header_seen = False
            for number, values in enumerate(rows, 1):
                row = [cell_text(v) for v in values]
                if is_blank_row(row):
                    continue
                if any("\0" in cell for cell in row):  # PostgreSQL refuses NUL in text and JSON
                    raise ExtractionError(f"row {number} of the sheet contains a NUL character")
                if not header_seen:
                    header_seen = True
                    if not include_header:
                        continue
                yield row
        finally:
            workbook.close()
    except python_calamine.CalamineError as exc:
        raise ExtractionError(f"the workbook cannot be read: {exc}") from None
    except (ValueError, OSError) as exc:  # python-calamine raises these for broken zips and XML too
        raise ExtractionError(f"the workbook cannot be read: {exc}") from None


def extract_xlsx(path, chunk_rows: int) -> Extracted:
    planner = _Planner(chunk_rows)
    for row in iter_xlsx_rows(path, include_header=True):
        planner.add(row, None)
    return planner.result()


def extract(path, file_type: str, chunk_rows: int) -> Extracted:
    if file_type == "xlsx":
        return extract_xlsx(path, chunk_rows)
    if file_type == "csv":
        return extract_csv(path, chunk_rows)
    raise ExtractionError(f"files of type {file_type!r} cannot be imported")
