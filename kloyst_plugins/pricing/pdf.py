"""A quotation as a PDF a customer accepts and a finance team files: who issues it, to whom, what, until when,
how much.

The issuer's name and address come from settings (``pricing.issuer_name``, ``pricing.issuer_address``);
a PDF without an issuer name is refused (:class:`IssuerMissing`) rather than sent out anonymous. Money is written
as people write it, with the currency's symbol and minor units ("₹1,234.50", "$0.03", "¥120"), while
Kloyst counts in millionths (:mod:`kloyst.money`): amounts and totals are rounded half up to the minor
unit for the page, and unit prices keep the digits Meta publishes ("$0.0068"), which a footnote says.
No internal identifier is printed: the quotation is named by :func:`reference`, the rate card by its
date. Text is in any script: fonts come from :mod:`.fonts`, HarfBuzz (uharfbuzz) shapes it so
Devanagari conjuncts and joined Arabic come out as written, not as isolated letters, and a line
that needs shaping is drawn by :mod:`.shaping` so that it also reads back as written.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from babel import Locale
from babel.numbers import format_currency, get_currency_name, get_currency_precision
from fpdf import FPDF
from fpdf.fonts import FontFace

from kloyst.api import MICROS, to_micros
from kloyst_plugins.pricing.fonts import REPLACEMENT, FontsMissing, font_set
from kloyst_plugins.pricing.models import PricingSnapshot, Quotation
from kloyst_plugins.pricing.shaping import ShapedLines, needs_shaping

ENGLISH = Locale("en")
FONT = "noto"
GREY = (90, 90, 90)
RULE_GREY = (200, 200, 200)
ITEM_COLUMNS = ("Country", "Market", "Volume band", "Messages", "Unit price", "Amount")
ITEM_WIDTHS = (32, 42, 38, 22, 22, 24)
ITEM_ALIGN = ("LEFT", "LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT")


class IssuerMissing(RuntimeError):
    """No issuer is configured: a quotation must say who offers it."""


# What stops a render whatever the quotation: recorded on it, and logged in one line rather than a traceback.
NOT_CONFIGURED = (FontsMissing, IssuerMissing)


@dataclass(frozen=True)
class Issuer:
    """The business that offers the prices: the platform operator, from settings."""

    name: str
    address: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Mapping) -> Issuer:
        name = " ".join(str(settings.get("pricing.issuer_name") or "").split())
        if not name:
            raise IssuerMissing("quotation PDFs name who issues them: set pricing.issuer_name (PRICING_ISSUER_NAME) "
                                "and pricing.issuer_address (PRICING_ISSUER_ADDRESS)")
        return cls(name=name, address=tuple(settings.get("pricing.issuer_address") or ()))


def reference(quotation: Quotation) -> str:
    """The quotation's name on paper: its date and the first eight hex digits of its id (``Q-20261205-7F3A9C2B``),
    short enough to read out on a call and enough to find it among a vendor's quotations."""
    return f"Q-{quotation.created_at:%Y%m%d}-{quotation.id.hex[:8].upper()}"


def amount(micros: int, currency: str) -> str:
    """An amount rounded half up to the currency's minor unit, with its symbol: ``211100, "USD"`` → ``"$0.21"``."""
    digits = get_currency_precision(currency)
    value = (Decimal(int(micros)) / MICROS).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return format_currency(value, currency, locale=ENGLISH)


def unit_price(micros: int, currency: str) -> str:
    """A price per message with every digit it has, but at least the minor unit: ``6800`` → ``"$0.0068"``,
    ``500000`` → ``"$0.50"``."""
    value = (Decimal(int(micros)) / MICROS).normalize()
    return format_currency(value, currency, locale=ENGLISH, decimal_quantization=False)


def country_name(code: str | None) -> str:
    if code is None:
        return "Unknown country"
    return ENGLISH.territories.get(code, code) if code != "001" else "International numbers"


def band(item) -> str:
    """The month's volume band a line is priced in (``100,001–500,000 (-5%)``); no band: Meta's list rate."""
    if item.tier_from is None:
        return "List rate"
    span = f"{item.tier_from:,}\N{EN DASH}{item.tier_to:,}" if item.tier_to is not None else (
        f"{item.tier_from:,} and more")
    if item.discount_micropercent:
        percent = (Decimal(item.discount_micropercent) / MICROS).normalize()
        span += f" ({percent:f}%)"
    return span


def when(moment: dt.datetime, *, time: bool = False) -> str:
    day = f"{moment.day} {moment:%B %Y}"
    return f"{day}, {moment:%H:%M} UTC" if time else day


def one_line(text) -> str:
    """NFC (so precomposed letters find their glyphs) and every run of whitespace, newlines included, one space."""
    return " ".join(unicodedata.normalize("NFC", str(text if text is not None else "")).split())


@dataclass(frozen=True)
class Page:
    """Every string the page shows, decided before drawing, so the fonts it needs are known up front."""

    issuer: Issuer
    facts: tuple[tuple[str, str], ...]
    items: tuple[tuple[str, ...], ...]
    totals: tuple[tuple[str, str], ...]  # the last is the total
    notes: tuple[str, ...]
    title: str

    def strings(self) -> Iterable[str]:
        yield from (self.issuer.name, *self.issuer.address, self.title, *ITEM_COLUMNS, *self.notes)
        for pair in (*self.facts, *self.totals):
            yield from pair
        for row in self.items:
            yield from row


def in_window_note(quotation: Quotation) -> tuple[str, ...]:
    """The estimate of messages Meta may not charge (open customer-service windows), as a note: never a total."""
    count = quotation.estimated_free_in_window
    if not count:
        return ()
    return (f"Estimate, not deducted: {count:,} recipient{'' if count == 1 else 's'} had an open customer-service "
            f"window when quoted. Meta does not charge a utility template delivered inside it, so about "
            f"{amount(quotation.estimated_free_in_window_micros, quotation.currency)} may come back after delivery; "
            "the total is held in full and each message is settled at the price Meta reports.",)


def page_of(quotation: Quotation, snapshot: PricingSnapshot, vendor_name: str, issuer: Issuer) -> Page:
    currency = quotation.currency
    facts = (
        ("Prepared for", one_line(vendor_name)),
        ("Quotation", reference(quotation)),
        ("Date", when(quotation.created_at)),
        ("Valid until", when(quotation.expires_at, time=True)),
        ("Messages", f"{quotation.category.title()} template messages to {quotation.recipients:,} "
                     f"recipient{'' if quotation.recipients == 1 else 's'}"),
        ("Currency", f"{get_currency_name(currency, locale=ENGLISH)} ({currency})"),
        ("Rates", f"Meta's rate card effective {when(snapshot.effective_from)}"),
    )
    items = tuple((country_name(item.country), one_line(item.market), band(item), f"{item.quantity:,}",
                   unit_price(item.unit_price_micros, currency), amount(item.amount_micros, currency))
                  for item in quotation.items)
    totals = [("Meta's rates, after volume bands", amount(quotation.subtotal_micros, currency)),
              ("Platform fees" if quotation.fees_micros >= 0 else "Discounts", amount(quotation.fees_micros, currency))]
    totals += [(one_line(adjustment["description"]), amount(to_micros(adjustment["amount"]), currency))
               for adjustment in quotation.adjustments]
    if not quotation.adjustments and quotation.minimum_topup_micros:
        totals.append(("Minimum charge top-up", amount(quotation.minimum_topup_micros, currency)))
    totals.append((f"Total ({currency})", amount(quotation.total_micros, currency)))
    notes = (
        "Prices are per template message delivered, in the currency shown, at Meta's rates of the rate card named "
        "above with the platform's fees; a later rate card does not change this quotation. A campaign launched "
        "with it by the time above is charged these prices.",
        "Unit prices are shown to the precision they are charged at; amounts and totals are rounded to the "
        "currency's smallest unit.",
    ) + in_window_note(quotation)
    return Page(issuer=issuer, facts=facts, items=items, totals=tuple(totals), notes=notes,
                title=f"Quotation {reference(quotation)}")


class QuotationPdf(FPDF):
    """An A4 page in Noto Sans with the fallback faces the page's text needs, and HarfBuzz shaping."""

    def __init__(self, page: Page, font_dirs: Iterable[str]) -> None:
        super().__init__(format="A4")
        fonts = font_set(tuple(font_dirs))
        fallbacks, self.undrawable = fonts.fallbacks_for("".join(page.strings()))
        self.add_font(FONT, "", fonts.regular.path)
        self.add_font(FONT, "B", fonts.bold.path)
        names = []
        for number, face in enumerate(fallbacks):
            names.append(f"fallback{number}")
            self.add_font(names[-1], "", face.path, collection_font_number=face.index)
            if face.bold is not None:
                self.add_font(names[-1], "B", face.bold)
        if names:
            # Not every fallback has a bold face (emoji, CJK): bold text then takes the regular one, not nothing.
            # Noto Sans last: a fallback set as the font itself (right-to-left text, see .shaping) lacks Latin.
            self.set_fallback_fonts([*names, FONT], exact_match=False)
        self.shaped = ShapedLines(self, [fonts.regular, *fallbacks], [FONT, *names])
        self.set_text_shaping(True)
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(True, margin=15)
        self.set_title(page.title)
        self.set_author(page.issuer.name)
        self.set_creator("Kloyst")
        self.set_lang("en")

    def write_line(self, width: float, height: float, value: str, *, bold: bool = False, size: float = 10,
                   align: str = "L", color=(0, 0, 0)) -> None:
        """``value`` from the current position, wrapped within ``width`` (0: to the right margin); then the next
        line at the left margin."""
        value = self.clean(value)
        self.set_font(FONT, "B" if bold else "", size)
        self.set_text_color(*color)
        if not needs_shaping(value):
            self.multi_cell(width, height, value, align=align, new_x="LMARGIN", new_y="NEXT")
            return
        x = self.get_x()
        width = width or self.w - self.r_margin - x
        for line in self.shaped.wrap(value, width, size, bold):
            self.shaped.draw_line(line, x, self.get_y(), width, height, size=size, bold=bold, align=align,
                                  color=color)
            self.set_xy(x, self.get_y() + height)
        self.set_x(self.l_margin)

    def write_cell(self, width: float, height: float, value: str, *, bold: bool = False, size: float = 10,
                   align: str = "L") -> None:
        """``value`` on one line in a box of ``width``; the position moves to the box's right edge."""
        value = self.clean(value)
        self.set_font(FONT, "B" if bold else "", size)
        if not needs_shaping(value):
            self.cell(width, height, value, align=align)
            return
        x, y = self.get_x(), self.get_y()
        self.shaped.draw_line(value, x, y, width, height, size=size, bold=bold, align=align)
        self.set_xy(x + width, y)

    def clean(self, value: str) -> str:
        """``value`` with the characters no installed face draws shown as U+FFFD."""
        if not self.undrawable:
            return value
        return "".join(REPLACEMENT if char in self.undrawable else char for char in value)


def draw(page: Page, font_dirs: Iterable[str]) -> bytes:
    pdf = QuotationPdf(page, font_dirs)
    pdf.add_page()
    pdf.write_line(0, 7, page.issuer.name, bold=True, size=14)
    for line in page.issuer.address:
        pdf.write_line(0, 4.5, line, size=9, color=GREY)
    pdf.ln(4)
    pdf.write_line(0, 10, "Quotation", bold=True, size=20)
    pdf.set_draw_color(*RULE_GREY)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(3)
    for label, value in page.facts:
        pdf.set_font(FONT, "B", 10)
        pdf.set_text_color(*GREY)
        pdf.cell(34, 6, label)
        pdf.write_line(0, 6, value, bold=label == "Prepared for")
    pdf.ln(5)
    pdf.set_text_color(0, 0, 0)
    pdf.set_font(FONT, "", 9)
    with pdf.table(col_widths=ITEM_WIDTHS, text_align=ITEM_ALIGN, line_height=5.5, padding=(1.2, 1.5),
                   borders_layout="HORIZONTAL_LINES", headings_style=FontFace(emphasis="BOLD"),
                   num_heading_rows=1) as table:
        table.row(ITEM_COLUMNS)
        for row in page.items:
            table.row([pdf.clean(cell) for cell in row])
    pdf.ln(4)
    for position, (label, value) in enumerate(page.totals):
        total = position == len(page.totals) - 1
        pdf.write_cell(140, 7 if total else 6, label, bold=total, size=11 if total else 10, align="R")
        pdf.cell(0, 7 if total else 6, value, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    for note in page.notes:
        pdf.write_line(0, 4, note, size=8, color=GREY)
        pdf.ln(1)
    return bytes(pdf.output())


def render(quotation: Quotation, snapshot: PricingSnapshot, vendor_name: str, settings: Mapping) -> bytes:
    """The quotation's PDF; raises one of :data:`NOT_CONFIGURED` when the issuer or the fonts are missing."""
    issuer = Issuer.from_settings(settings)
    return draw(page_of(quotation, snapshot, vendor_name, issuer), settings["pricing.font_dirs"])


def setup_problems(settings: Mapping) -> list[str]:
    """What would make every quotation PDF fail in this process (each a sentence that says how to fix it)."""
    problems = []
    for check in (lambda: Issuer.from_settings(settings), lambda: font_set(tuple(settings["pricing.font_dirs"]))):
        try:
            check()
        except NOT_CONFIGURED as exc:
            problems.append(str(exc))
    return problems
