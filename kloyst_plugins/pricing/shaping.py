"""Lines in scripts that need shaping, drawn so that they both look right and read back right.

fpdf2 with HarfBuzz draws Devanagari and Arabic correctly, but the text a reader gets back from
such a page is wrong: glyphs are stored in visual order (Arabic words come out reversed), the
glyph of a vowel sign drawn before its consonant maps to no character (readers print its raw
code), and a mark's own offset looks like a gap between words (pypdf and poppler both split
"लिमिटेड" apart). PDF's remedy, /ActualText, is ignored by many readers, pypdf among them. So a
line that needs shaping is drawn the way an OCRed scan is: the shaped glyphs as filled outlines
(HarfBuzz shapes the line and draws each glyph's exact curves; a color emoji is placed as its own
PNG), and under them the same line as text in logical order, unshaped and clipped away, which
readers extract, search and copy as written. Lines that need no shaping (Latin, Cyrillic, CJK)
stay ordinary text, drawn by fpdf2.
"""

from __future__ import annotations

import functools
import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uharfbuzz as hb
from fpdf import FPDF
from fpdf.bidi import BidiParagraph
from fpdf.enums import PathPaintRule, TextDirection, TextMode

from kloyst_plugins.pricing.fonts import FontFile, coverage

STRONG_RTL = ("R", "AL")


def needs_shaping(text: str) -> bool:
    """Whether ``text`` reads differently from its code points drawn one after another.

    Right-to-left letters (their order and joined forms) and combining marks such as Devanagari
    vowel signs do; emoji variation selectors do not (they only pick a presentation).
    """
    return any(unicodedata.bidirectional(char) in STRONG_RTL
               or (unicodedata.category(char) in ("Mn", "Mc") and not 0xFE00 <= ord(char) <= 0xFE0F)
               for char in text)


@functools.lru_cache(maxsize=64)
def _hb_font(path: Path, index: int) -> hb.Font:
    """A HarfBuzz font of one face, made once per process (HarfBuzz fonts are immutable, so threads share it)."""
    return hb.Font(hb.Face(hb.Blob.from_file_path(str(path)), index))


@dataclass(frozen=True)
class Run:
    """Consecutive characters drawn with one face, in one direction."""

    text: str
    path: Path
    index: int
    rtl: bool


class OutlinePen:
    """A fontTools-style pen (what HarfBuzz draws into) writing one glyph into an fpdf2 path, in page units."""

    def __init__(self, path, origin_x: float, baseline: float, scale: float) -> None:
        self.path, self.origin_x, self.baseline, self.scale = path, origin_x, baseline, scale
        self.current = (0.0, 0.0)

    def _at(self, point) -> tuple[float, float]:
        return self.origin_x + point[0] * self.scale, self.baseline - point[1] * self.scale

    def moveTo(self, point) -> None:  # noqa: N802 - the pen protocol's names
        self.path.move_to(*self._at(point))
        self.current = point

    def lineTo(self, point) -> None:  # noqa: N802
        self.path.line_to(*self._at(point))
        self.current = point

    def curveTo(self, *points) -> None:  # noqa: N802
        (x1, y1), (x2, y2), (x3, y3) = (self._at(point) for point in points[-3:])
        self.path.curve_to(x1, y1, x2, y2, x3, y3)
        self.current = points[-1]

    def qCurveTo(self, *points) -> None:  # noqa: N802
        """Quadratic segments; between two off-curve points lies an implied on-curve point at their middle."""
        *controls, end = points
        for number, control in enumerate(controls):
            last = number == len(controls) - 1
            target = end if last else ((control[0] + controls[number + 1][0]) / 2,
                                       (control[1] + controls[number + 1][1]) / 2)
            (cx, cy), (tx, ty) = self._at(control), self._at(target)
            self.path.quadratic_curve_to(cx, cy, tx, ty)
            self.current = target

    def closePath(self) -> None:  # noqa: N802
        self.path.close()


class ShapedLines:
    """Draws lines needing shaping on an FPDF page with a list of faces, the first that has a character drawing it.

    ``families`` are the faces' family names in the FPDF document (for the readable text), in the same order.
    """

    def __init__(self, pdf: FPDF, faces: Sequence[FontFile], families: Sequence[str]) -> None:
        self.pdf = pdf
        self.faces = list(faces)
        self.families = list(families)

    def _face_for(self, char: str, bold: bool) -> tuple[Path, int] | None:
        for face in self.faces:
            path = face.bold if bold and face.bold is not None else face.path
            index = face.index if path == face.path else 0
            if ord(char) in coverage(path, index):
                return path, index
        return None

    def _family_for(self, text: str) -> str:
        """The family whose regular face has the most characters of ``text`` (the first of equals)."""
        counts = [sum(ord(char) in coverage(face.path, face.index) for char in text) for face in self.faces]
        return self.families[counts.index(max(counts))]

    def runs(self, text: str, bold: bool) -> list[Run]:
        """``text`` cut into runs of one face and direction, in visual order left to right."""
        paragraph = BidiParagraph(text)
        fragments: list[list[Run]] = []
        for fragment, direction in paragraph.get_bidi_fragments():
            rtl = direction == TextDirection.RTL
            runs: list[Run] = []
            for char in fragment:
                face = self._face_for(char, bold)
                # A mark, a joiner or a character no face has stays with what precedes it.
                if runs and (face is None or unicodedata.category(char) in ("Mn", "Mc", "Cf")
                             or (runs[-1].path, runs[-1].index) == face):
                    runs[-1] = Run(runs[-1].text + char, runs[-1].path, runs[-1].index, rtl)
                elif face is not None:
                    runs.append(Run(char, face[0], face[1], rtl))
            fragments.append(runs[::-1] if rtl else runs)
        if paragraph.base_direction == TextDirection.RTL:
            fragments.reverse()
        return [run for runs in fragments for run in runs]

    @staticmethod
    def _shape(run: Run):
        font = _hb_font(run.path, run.index)
        buffer = hb.Buffer()
        buffer.add_str(run.text)
        buffer.guess_segment_properties()
        buffer.direction = "rtl" if run.rtl else "ltr"
        hb.shape(font, buffer, {})
        return font, buffer.glyph_infos, buffer.glyph_positions

    def width(self, text: str, size: float, bold: bool = False) -> float:
        """The drawn width of ``text`` at ``size`` points, in page units."""
        total = 0.0
        for run in self.runs(text, bold):
            font, _infos, positions = self._shape(run)
            total += sum(position.x_advance for position in positions) * self._scale(font, size)
        return total

    def _scale(self, font: hb.Font, size: float) -> float:
        return size / self.pdf.k / font.face.upem

    def wrap(self, text: str, width: float, size: float, bold: bool = False) -> list[str]:
        """``text`` broken at spaces into lines no wider than ``width`` (a single longer word gets a line alone)."""
        lines: list[str] = []
        for word in text.split(" "):
            candidate = f"{lines[-1]} {word}" if lines else word
            if lines and self.width(candidate, size, bold) <= width:
                lines[-1] = candidate
            else:
                lines.append(word)
        return lines

    def draw_line(self, text: str, x: float, y: float, width: float, height: float, *, size: float, bold: bool,
                  align: str = "L", color: tuple[int, int, int] = (0, 0, 0)) -> None:
        """One line in the box ``(x, y, width, height)``: outlines that look right, text that reads right."""
        drawn = self.width(text, size, bold)
        margin = self.pdf.c_margin  # the padding fpdf2 keeps inside a cell, so both kinds of line align
        left = x + (width - drawn - margin if align == "R" else (width - drawn) / 2 if align == "C" else margin)
        baseline = y + height / 2 + 0.3 * size / self.pdf.k  # where fpdf2 puts a cell's baseline
        # The text first: readers place it after what precedes it on the line, before the images' own matrices.
        self._readable_text(text, left, y, height, size, bold)
        images = []
        with self.pdf.new_path(paint_rule=PathPaintRule.FILL_NONZERO) as path:
            path.style.fill_color = "#{:02x}{:02x}{:02x}".format(*color)
            path.style.stroke_color = None
            pen_x = left
            for run in self.runs(text, bold):
                font, infos, positions = self._shape(run)
                scale = self._scale(font, size)
                for info, position in zip(infos, positions):
                    origin = pen_x + position.x_offset * scale
                    png = font.get_glyph_color_png(info.codepoint)
                    if png.data:
                        images.append((png.data, origin, baseline - position.y_offset * scale,
                                       font.get_glyph_extents(info.codepoint), scale))
                    else:
                        font.draw_glyph_with_pen(info.codepoint, OutlinePen(
                            path, origin, baseline - position.y_offset * scale, scale))
                    pen_x += position.x_advance * scale
        for data, origin, glyph_baseline, extents, scale in images:
            self.pdf.image(io.BytesIO(data), x=origin + extents.x_bearing * scale,
                           y=glyph_baseline - extents.y_bearing * scale, w=extents.width * scale,
                           h=-extents.height * scale)

    def _is_color(self, char: str) -> bool:
        return any(face.color and ord(char) in coverage(face.path, face.index) for face in self.faces) and not any(
            ord(char) in coverage(face.path, face.index) for face in self.faces if not face.color)

    def _readable_text(self, text: str, x: float, y: float, height: float, size: float, bold: bool) -> None:
        """``text`` where the outlines are, for readers: one unshaped glyph per character, stored as PDF text is
        (in visual order: readers turn a right-to-left run back, one font's run at a time, so each is set in
        a single face where it can be), and invisible (Tr 3). Tr 3 does not hide Type3 glyphs, so color
        emoji are also clipped away: some readers drop clipped text, and so lose only the emoji."""
        pdf = self.pdf
        pieces: list[tuple[str, bool, bool]] = []  # visual order: (characters, right-to-left, color emoji)
        for character in BidiParagraph(text).get_reordered_characters():
            kind = (character.get_direction_from_level() == "R", self._is_color(character.character))
            if pieces and pieces[-1][1:] == kind:
                pieces[-1] = (pieces[-1][0] + character.character, *kind)
            else:
                pieces.append((character.character, *kind))
        shaping = pdf.text_shaping
        pdf.set_text_shaping(False)
        try:
            with pdf.local_context(text_mode=TextMode.INVISIBLE):
                pdf.set_xy(x, y)
                for piece, rtl, color in pieces:
                    family = self._family_for(piece) if rtl else self.families[0]
                    pdf.set_font(family, "B" if bold and family == self.families[0] else "", size)
                    width = pdf.get_string_width(piece)
                    if color:
                        with pdf.rect_clip(pdf.get_x(), y, 0, 0):
                            pdf.cell(width, height, piece)
                    else:
                        pdf.cell(width, height, piece)
        finally:
            pdf.text_shaping = shaping
