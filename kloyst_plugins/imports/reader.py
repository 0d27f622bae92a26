"""Reading one chunk's rows from a stored import file, without reading the whole file.

CSV: header extraction recorded where each chunk's first record starts in the raw file
bytes (``chunk.byte_offset``), so a chunk seeks there and decodes with the job's encoding;
the file is never loaded whole. ``csv.reader(strict=True)``: a malformed record is an
unreadable file, not a guess.

XLSX: a sheet cannot be entered in the middle (the XML must be parsed from the start, and
python-calamine loads a whole sheet), so reading chunk *n* would cost *n* chunks. The first
chunk task of a job therefore converts the sheet once into a CSV "rows file" next to the
upload (UTF-8, one record per data row, with an index of byte offsets every
:data:`INDEX_STEP` rows); every chunk then reads that like a CSV. Conversion happens under
an exclusive file lock; a chunk that finds the lock taken raises :class:`Busy` and is
rescheduled rather than waiting. The zip guard of the upload side bounds what calamine may
load (member sizes), and openpyxl's read-only streaming mode is the fallback reader.

Blank records (every cell empty) are not data rows: they are skipped and not numbered, the
same rule header extraction counts rows by.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import fcntl
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from kloyst_plugins.imports import extract, storage

INDEX_STEP = 1000


class UnreadableFile(Exception):
    """The file (or this chunk of it) cannot be read; ``str(error)`` says why for the job's error."""


class Busy(Exception):
    """Another worker is converting the file right now; try this chunk again shortly."""


def stored_path(settings, job) -> Path:
    return storage.path_for(settings, job.vendor_id, job.stored_name)


def read_chunk(settings, job, chunk) -> list[tuple[int, list[str]]]:
    """``[(data row number, cells)]`` for the chunk's ``row_count`` rows (raises UnreadableFile / Busy)."""
    path = stored_path(settings, job)
    try:
        if job.file_type == "xlsx":
            rows_path, index = ensure_rows_file(path)
            step_row = ((chunk.first_row - 1) // INDEX_STEP) * INDEX_STEP + 1
            offset = index[(step_row - 1) // INDEX_STEP] if index else 0
            records = _csv_records(rows_path, offset, "utf-8", ",")
            skip = chunk.first_row - step_row
        else:
            records = _csv_records(path, chunk.byte_offset or 0, job.encoding or "utf-8", job.delimiter or ",")
            skip = 0
        rows = []
        number = chunk.first_row - skip
        with contextlib.closing(records):
            for cells in records:
                if number >= chunk.first_row:
                    rows.append((number, cells))
                number += 1
                if len(rows) == chunk.row_count:
                    break
        return rows
    except (OSError, csv.Error, UnicodeError, ValueError) as exc:
        raise UnreadableFile(f"rows {chunk.first_row}–{chunk.first_row + chunk.row_count - 1} could not be read: "
                             f"{type(exc).__name__}: {exc}") from None


def _csv_records(path: Path, offset: int, encoding: str, delimiter: str) -> Iterator[list[str]]:
    with open(path, "rb") as raw:
        encoding = _seekable_encoding(raw, encoding, offset)
        raw.seek(offset)
        text = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
        # csv's own field size limit (128 KiB) refuses absurd cells; a NUL is refused by the reader.
        for cells in csv.reader(text, delimiter=delimiter, strict=True):
            if not extract.is_blank_row(cells):  # extraction's rule, so row numbers agree
                yield cells


def _seekable_encoding(raw, encoding: str, offset: int) -> str:
    # Codecs that read a byte-order mark only at the start of the stream: in the middle of the
    # file, decode with the byte order that mark declared.
    name = codecs.lookup(encoding).name
    if offset == 0:
        return encoding
    if name == "utf-16":
        raw.seek(0)
        bom = raw.read(2)
        return "utf-16-be" if bom == codecs.BOM_UTF16_BE else "utf-16-le"
    if name == "utf-32":
        raw.seek(0)
        bom = raw.read(4)
        return "utf-32-be" if bom == codecs.BOM_UTF32_BE else "utf-32-le"
    if name == "utf-8-sig":
        return "utf-8"
    return encoding


def rows_file_paths(path: Path) -> tuple[Path, Path, Path]:
    return path.with_name(path.name + ".rows.csv"), path.with_name(path.name + ".rows.idx"), \
        path.with_name(path.name + ".rows.lock")


def ensure_rows_file(path: Path) -> tuple[Path, list[int]]:
    """The converted rows file of an XLSX upload and its offset index, converting it if needed."""
    rows_path, index_path, lock_path = rows_file_paths(path)
    if index_path.exists():  # written last, after the rows file is complete
        return rows_path, json.loads(index_path.read_text())
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{path.name} is being converted by another worker") from None
        try:
            if not index_path.exists():
                _convert(path, rows_path, index_path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return rows_path, json.loads(index_path.read_text())


def remove_rows_file(path: Path) -> None:
    for part in rows_file_paths(path):
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def _convert(path: Path, rows_path: Path, index_path: Path) -> None:
    tmp_rows = rows_path.with_name(rows_path.name + f".{os.getpid()}.part")
    index: list[int] = []
    try:
        with open(tmp_rows, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            # Extraction's own row iterator: the same blank-row rule and header, so chunk rows are
            # exactly the rows extraction counted.
            for count, cells in enumerate(extract.iter_xlsx_rows(path)):
                if count % INDEX_STEP == 0:
                    out.flush()
                    index.append(out.tell())
                writer.writerow(cells)
        os.replace(tmp_rows, rows_path)
        tmp_index = index_path.with_name(index_path.name + ".part")
        tmp_index.write_text(json.dumps(index))
        os.replace(tmp_index, index_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_rows.unlink()
