"""The fonts a quotation PDF embeds: Google's Noto and WenQuanYi, from the operating system's font packages.

A quotation names a vendor, an issuer and countries in whatever script they are written in
("Café Ünïcode — भारत Traders", Arabic, Chinese, an emoji), and a PDF can only show the glyphs of
the fonts it embeds: fpdf2's built-in Helvetica is Latin-1 and prints "?" for everything else.
The Noto families cover every script Unicode encodes and Debian packages them, so Kloyst embeds
those rather than carrying font files of its own: ``fonts-noto-core`` (Latin, Greek, Cyrillic, and
one family for each other script) and ``fonts-noto-color-emoji``. Chinese, Japanese and Korean
come from WenQuanYi Micro Hei (``fonts-wqy-microhei``), not Noto CJK: Noto CJK's outlines are
CFF, which fpdf2 embeds with a CMap encoding that many readers (pypdf among them) cannot map
back to text, so a CJK name would print right but copy and search as garbage; WenQuanYi's
outlines are TrueType, embedded like Noto Sans. Files are found by name under
``pricing.font_dirs`` (Debian's ``/usr/share/fonts`` by default).

Noto Sans sets the page. A character it lacks is drawn from the first fallback that has it:
:data:`FALLBACKS` in order, then any other Noto Sans family found. Only the fallbacks a document
needs are embedded (a Latin-only quotation embeds Noto Sans alone, a Hindi one adds Devanagari),
and the character maps read to decide are kept for the life of the process, so choosing costs
nothing after the first document. A character that needs a fallback whose package is not
installed stops the render with a :class:`FontsMissing` naming the package; one that no font of
the full set can draw (a private-use code point) is shown as U+FFFD rather than lost silently.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fontTools.ttLib import TTFont

DEFAULT_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


@dataclass(frozen=True)
class Face:
    """One font face: a file name, its face number inside a collection, and the package shipping it."""

    file: str
    package: str
    index: int = 0
    color: bool = False  # bitmap glyphs (CBDT): drawn as images, not outlines


REGULAR = Face("NotoSans-Regular.ttf", "fonts-noto-core")
BOLD = Face("NotoSans-Bold.ttf", "fonts-noto-core")
# The scripts vendor names are most often written in come first: the first face that has a
# character draws it, so the order decides between faces that share characters (digits, punctuation).
FALLBACKS = (
    Face("NotoSansDevanagari-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansArabic-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansBengali-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansTamil-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansTelugu-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansGujarati-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansGurmukhi-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansKannada-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansMalayalam-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansThai-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansHebrew-Regular.ttf", "fonts-noto-core"),
    Face("wqy-microhei.ttc", "fonts-wqy-microhei"),  # ideographs, kana and Hangul in one face
    Face("NotoColorEmoji.ttf", "fonts-noto-color-emoji", color=True),
    Face("NotoSansSymbols-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansSymbols2-Regular.ttf", "fonts-noto-core"),
    Face("NotoSansMath-Regular.ttf", "fonts-noto-core"),
)
PACKAGES = tuple(dict.fromkeys(face.package for face in (REGULAR, BOLD, *FALLBACKS)))


class FontsMissing(RuntimeError):
    """The fonts a quotation needs are not installed; the message names the packages to install."""


@dataclass(frozen=True)
class FontFile:
    """An installed face, and its bold twin when the family has one."""

    path: Path
    index: int = 0
    bold: Path | None = None
    color: bool = False


def _needs_no_glyph(char: str) -> bool:
    """Layout controls (ZWJ, direction marks, variation selectors) and line breaks draw nothing of their own."""
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") or 0xFE00 <= ord(char) <= 0xFE0F or (
        0xE0100 <= ord(char) <= 0xE01EF)


@functools.cache
def coverage(path: Path, index: int) -> frozenset[int]:
    """The code points a face maps to a glyph (read once per face and process)."""
    font = TTFont(path, fontNumber=index, lazy=True)
    try:
        return frozenset(font.getBestCmap() or ())
    finally:
        font.close()


def _files_under(dirs: tuple[str, ...]) -> dict[str, Path]:
    """Every font file under ``dirs`` by file name; the first folder listed wins a name found twice."""
    found: dict[str, Path] = {}
    for folder in dirs:
        for root, _subdirs, names in os.walk(folder):
            for name in sorted(names):
                if name.lower().endswith(FONT_SUFFIXES):
                    found.setdefault(name, Path(root) / name)
    return found


class FontSet:
    """The Noto faces installed under some folders, and which of them a given text needs."""

    def __init__(self, dirs: Iterable[str]) -> None:
        self.dirs = tuple(dirs)
        self.files = _files_under(self.dirs)
        missing = [face for face in (REGULAR, BOLD) if face.file not in self.files]
        if missing:
            raise self._missing(missing)
        self.regular = self._file(REGULAR)
        self.bold = self._file(BOLD)

    def _file(self, face: Face) -> FontFile:
        return self._installed(face.file, face.index, face.color)

    def _installed(self, name: str, index: int = 0, color: bool = False) -> FontFile:
        return FontFile(self.files[name], index, self.files.get(name.replace("-Regular.", "-Bold.")), color)

    def _missing(self, faces: list[Face], why: str = "") -> FontsMissing:
        packages = " ".join(dict.fromkeys(face.package for face in faces))
        names = ", ".join(face.file for face in faces)
        return FontsMissing(f"quotation PDFs need the Noto fonts{why}: {names} not found under "
                            f"{', '.join(self.dirs) or 'no folder'}; install the Debian packages {packages} "
                            "(scripts/run-tests and the image do) or point PRICING_FONT_DIRS at a folder holding them")

    def _others(self) -> list[FontFile]:
        """Every other Noto Sans face found: the scripts :data:`FALLBACKS` does not name."""
        named = {face.file for face in (REGULAR, BOLD, *FALLBACKS)}
        return [self._installed(name) for name in sorted(self.files)
                if name.startswith("NotoSans") and name.endswith("-Regular.ttf") and name not in named]

    def fallbacks_for(self, text: str) -> tuple[list[FontFile], frozenset[str]]:
        """The fallback faces ``text`` needs, in the order to try them, and the characters of ``text`` that no
        installed face draws (to be shown as :data:`REPLACEMENT`).

        Raises :class:`FontsMissing` when a character might be in a fallback whose package is not installed.
        """
        regular = coverage(self.regular.path, self.regular.index)
        wanted = {char for char in text if ord(char) not in regular and not _needs_no_glyph(char)}
        if not wanted:
            return [], frozenset()
        chosen: list[FontFile] = []
        absent: list[Face] = []
        remaining = set(wanted)
        candidates = [(face, self._file(face) if face.file in self.files else None) for face in FALLBACKS]
        candidates += [(None, font) for font in self._others()]
        for face, font in candidates:
            if not remaining:
                break
            if font is None:
                absent.append(face)
                continue
            covered = {char for char in remaining if ord(char) in coverage(font.path, font.index)}
            if covered:
                chosen.append(font)
                remaining -= covered
        if remaining and absent:
            shown = " ".join(f"{char!r} (U+{ord(char):04X})" for char in sorted(remaining)[:5])
            raise self._missing(absent, why=f" to draw {shown}")
        return chosen, frozenset(remaining)


@functools.lru_cache(maxsize=8)
def font_set(dirs: tuple[str, ...]) -> FontSet:
    """The :class:`FontSet` of ``dirs``, built once per process (a folder walk); a failure is not kept, so
    fonts installed after a :class:`FontsMissing` are found by the next document."""
    return FontSet(dirs)
