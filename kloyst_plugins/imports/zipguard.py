"""The zip guard: what an XLSX must satisfy before any spreadsheet parser opens it.

No XLSX parser protects itself against a zip bomb: a 310 KB file whose sheet inflates to
300 MB took openpyxl 634 MB of memory (measured). So the central directory is
checked first — member count, declared sizes, compression ratio, encryption, methods and
names — and every member's *local* header is read too, because ClamAV does not unpack
members whose local header defers its sizes to a ZIP64 record (Cisco-Talos/clamav#1527),
so such a member could carry anything past the scanner.

The declared sizes are a trustworthy upper bound when the members are then read through
Python's :mod:`zipfile`, which stops at ``file_size`` and fails on a CRC mismatch.
:func:`iter_member_blocks` is that bounded read, used to scan each member with clamd and
to look for DTDs (no OOXML part has one; a DTD is how billion-laughs and XXE start).

The DTD search reads each part as an XML parser would, not as raw bytes: ``<!DOCTYPE``
written in UTF-16 is ``<\0!\0D\0…`` on disk, which a byte search never matches while
the parser that opens the sheet reads it as a DTD. So each part is decoded the way XML 1.0
(Appendix F) says a parser finds its encoding — the byte-order mark, else the pattern of
its first bytes, else UTF-8 — and also by the encoding its XML declaration names, and the
DTD is looked for in that text. A part naming an encoding Python cannot decode is refused:
what cannot be read cannot be checked.
"""

from __future__ import annotations

import codecs
import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
LOCAL_SIGNATURE = b"PK\x03\x04"
ZIP64_MARKER = 0xFFFFFFFF
# Tiny members have meaningless ratios (64 KiB of zeros deflates to ~100 bytes); the ratio
# rule is for members big enough to matter.
RATIO_MIN_BYTES = 1024 * 1024


class ZipRefused(ValueError):
    """The archive breaks a guard rule; the message says which, for the person who uploaded it."""


# Why these defaults:
#
# * What stops a zip *bomb* is the **ratio** (100:1) together with the upload size limit
#   (``imports.max_upload_bytes``): a bomb is a small file that inflates enormously, and
#   deflate reaches 1000:1 on repetitive data, while a real sheet's XML compresses ~5-15:1
#   (openpyxl's 1,000,000-row test sheet: ~8:1). The ratio is checked per member from the
#   central directory, and the local headers must agree (see _check_local_header), so a
#   member cannot inflate past ``max_ratio × compressed size``; and every read goes through
#   zipfile, which stops at the checked ``file_size``.
# * The **size** limits then only bound what a legitimate-looking workbook may cost a worker:
#   disk for the converted rows file, clamd's per-member scan, and python-calamine, which
#   loads the whole first sheet: a worker's memory grows by about twice the sheet's XML
#   (measured: 1,000,000 rows, ~290 MB of XML → ~570 MB RSS). The defaults, 96 MiB per
#   member and 160 MiB in all (~330,000 rows), keep a worker under ~300 MB whatever is
#   uploaded; larger lists import as CSV, which streams at any size. Operators whose workers
#   have the memory can raise them (imports.xlsx_max_member_bytes,
#   imports.xlsx_max_total_bytes; the benchmark does, for its 1,000,000-row workbook).
#   Member count, encryption, methods, ZIP64 and names are fixed rules, not sizes, and stay
#   as A5 has them.
@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 200
    max_member_bytes: int = 96 * 1024 * 1024
    max_total_bytes: int = 160 * 1024 * 1024
    max_ratio: int = 100


DEFAULT_LIMITS = ZipLimits()


def limits_from_settings(settings) -> ZipLimits:
    """The guard's limits with the imports plugin's size settings applied (defaults where unset)."""
    settings = settings or {}

    def setting(name: str, default: int) -> int:
        value = settings.get(name)
        value = default if value in (None, "") else int(value)
        if value < 1:
            raise ValueError(f"{name} must be a positive number")
        return value

    return ZipLimits(max_members=DEFAULT_LIMITS.max_members,
                     max_member_bytes=setting("imports.xlsx_max_member_bytes", DEFAULT_LIMITS.max_member_bytes),
                     max_total_bytes=setting("imports.xlsx_max_total_bytes", DEFAULT_LIMITS.max_total_bytes),
                     max_ratio=setting("imports.xlsx_max_ratio", DEFAULT_LIMITS.max_ratio))


def _check_name(name: str) -> None:
    if "\\" in name or "\0" in name:
        raise ZipRefused(f"the archive member name {name[:100]!r} contains a backslash or NUL")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ZipRefused(f"the archive member name {name[:100]!r} is an absolute path")
    if ".." in path.parts:
        raise ZipRefused(f"the archive member name {name[:100]!r} climbs out of the archive (..)")


def _check_local_header(handle, info: zipfile.ZipInfo) -> None:
    handle.seek(info.header_offset)
    raw = handle.read(LOCAL_HEADER.size)
    if len(raw) != LOCAL_HEADER.size or raw[:4] != LOCAL_SIGNATURE:
        raise ZipRefused(f"the archive member {info.filename[:100]!r} has no valid local header")
    fields = LOCAL_HEADER.unpack(raw)
    compressed, uncompressed = fields[7], fields[8]
    if ZIP64_MARKER in (compressed, uncompressed):
        raise ZipRefused(f"the archive member {info.filename[:100]!r} uses ZIP64 sizes, which virus scanners "
                         "cannot see into; save the file again with a spreadsheet program")


def check(path, limits: ZipLimits = DEFAULT_LIMITS) -> list[zipfile.ZipInfo]:
    """Check the archive at ``path`` against ``limits``; return its members or raise :class:`ZipRefused`."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ZipRefused(f"the file is not a readable zip archive ({exc})") from exc
    with archive, open(path, "rb") as handle:
        members = archive.infolist()
        if len(members) > limits.max_members:
            raise ZipRefused(f"the archive has {len(members)} members; at most {limits.max_members} are accepted")
        seen: set[str] = set()
        total = 0
        for info in members:
            name = info.filename
            _check_name(name)
            if name in seen:
                raise ZipRefused(f"the archive lists the member {name[:100]!r} twice")
            seen.add(name)
            if info.flag_bits & 0x1:
                raise ZipRefused("the archive is encrypted (password-protected); remove the password and upload "
                                 "it again")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ZipRefused(f"the archive member {name[:100]!r} uses an unsupported compression method "
                                 f"({info.compress_type}); only stored and deflate are accepted")
            if info.file_size > limits.max_member_bytes:
                raise ZipRefused(f"the archive member {name[:100]!r} inflates to {info.file_size} bytes; the limit "
                                 f"is {limits.max_member_bytes} (member too large)")
            if info.file_size >= RATIO_MIN_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise ZipRefused(f"the archive member {name[:100]!r} is compressed more than {limits.max_ratio}:1, "
                                 "which is how zip bombs look")
            total += info.file_size
            if total > limits.max_total_bytes:
                raise ZipRefused(f"the archive inflates to more than {limits.max_total_bytes} bytes in all")
            _check_local_header(handle, info)
    return members


def iter_member_blocks(path, info: zipfile.ZipInfo, block: int = 1024 * 1024) -> Iterator[bytes]:
    """The decompressed bytes of one member, in blocks; bounded by the checked ``file_size``, CRC-verified.

    Only members :func:`check` passed come here, so their method is stored or deflate.
    """
    try:
        with zipfile.ZipFile(path) as archive, archive.open(info) as member:
            while data := member.read(block):
                yield data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ZipRefused(f"the archive member {info.filename[:100]!r} cannot be read ({exc})") from exc


# XML 1.0 Appendix F: an entity's first bytes tell its encoding family. Longer marks first (a
# UTF-32-LE BOM starts like UTF-16-LE's); the two-byte ``<`` patterns catch UTF-16 text with
# neither BOM nor declaration, which lenient parsers still read.
_ENCODING_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
    (b"\x00\x00\x00<", "utf-32-be"), (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<", "utf-16-be"), (b"<\x00", "utf-16-le"), (b"Lo\xa7\x94", "cp037"),  # EBCDIC "<?xm"
)
_DECLARED_ENCODING = re.compile(r"""<\?xml\s[^>]{0,200}?\bencoding\s*=\s*["']([^"'\s]{1,40})["']""")
_DTD_NEEDLES = ("<!DOCTYPE", "<!ENTITY")
_HEAD_BYTES = 512  # an XML declaration is at the very start and short


def part_encodings(name: str, head: bytes) -> list[str]:
    """The encodings an XML parser could read the part starting with ``head`` in: its BOM's or first bytes'
    (UTF-8 when nothing says otherwise), then the one its declaration names, if that differs.

    Raises :class:`ZipRefused` when the declaration names an encoding Python cannot decode.
    """
    found = next((encoding for mark, encoding in _ENCODING_MARKS if head.startswith(mark)), "utf-8")
    encodings = [found]
    declaration = _DECLARED_ENCODING.match(head[:_HEAD_BYTES].decode(found, "replace").lstrip("\ufeff"))
    if declaration:
        declared = declaration.group(1)
        try:
            b"".decode(declared)  # LookupError for unknown names and for codecs that are not text (rot13, zlib)
            canonical = codecs.lookup(declared).name
        except LookupError:
            raise ZipRefused(f"the archive member {name[:100]!r} declares the text encoding {declared[:40]!r}, "
                             "which Kloyst cannot read; save the workbook again as .xlsx") from None
        # "utf-16"/"utf-32" mean "by the BOM", which ``found`` already is.
        if canonical not in (codecs.lookup(found).name, "utf-16", "utf-32"):
            encodings.append(canonical)
    return encodings


def _declares_dtd(path, info: zipfile.ZipInfo, encoding: str) -> bool:
    # "replace": a parser that reads past a bad byte must not find a DTD this search skipped.
    decoder = codecs.getincrementaldecoder(encoding)("replace")
    overlap = max(len(n) for n in _DTD_NEEDLES) - 1
    tail = ""
    for data in iter_member_blocks(path, info):
        window = tail + decoder.decode(data)
        if any(n in window for n in _DTD_NEEDLES):
            return True
        tail = window[-overlap:]
    return any(n in tail + decoder.decode(b"", final=True) for n in _DTD_NEEDLES)


def find_dtd(path, members: list[zipfile.ZipInfo]) -> str | None:
    """The first member that declares a DTD (``<!DOCTYPE`` / ``<!ENTITY``) in any encoding a parser could read
    it in (:func:`part_encodings`), or None. Raises :class:`ZipRefused` for a part in an unreadable encoding."""
    for info in members:
        if info.is_dir():
            continue
        blocks = iter_member_blocks(path, info, block=_HEAD_BYTES)
        head = next(blocks, b"")
        blocks.close()
        for encoding in part_encodings(info.filename, head):
            if _declares_dtd(path, info, encoding):
                return info.filename
    return None
