"""A quotation as a PDF a finance team can file: who, what, until when, from which rate card, how much.

fpdf2 (pure Python, maintained, no system libraries) draws it with its core Helvetica font,
so the text must be Latin-1; names and notes are folded to it rather than failing the
document. The layout is deliberately plain: a header block, the items table, the totals.
"""

from __future__ import annotations

from fpdf import FPDF

from kloyst.money import format_micros, to_micros
from kloyst_plugins.pricing.models import PricingSnapshot, Quotation

COLUMNS = (("Country", 20), ("Market", 52), ("Category", 30), ("Quantity", 24), ("Unit price", 30),
           ("Amount", 34))


def _latin1(text) -> str:
    return str(text if text is not None else "").encode("latin-1", "replace").decode("latin-1")


def _money(micros: int, currency: str) -> str:
    return f"{format_micros(micros)} {currency}"


def _band(item) -> str:
    if item.tier_from is None:
        return ""
    upper = f"{item.tier_to:,}" if item.tier_to is not None else "+"
    discount = item.discount_micropercent / 1_000_000
    return f" (band {item.tier_from:,}-{upper}, {discount:g}%)"


def render(quotation: Quotation, snapshot: PricingSnapshot, vendor_name: str) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(f"Quotation {quotation.id}")
    pdf.set_author("Kloyst")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "Quotation", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    facts = (
        ("Vendor", vendor_name),
        ("Quotation id", quotation.id),
        ("Date", quotation.created_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("Valid until", quotation.expires_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("Category", quotation.category),
        ("Recipients", f"{quotation.recipients:,}"),
        ("Currency", quotation.currency),
        ("Rate card", f"snapshot {snapshot.id}, effective {snapshot.effective_from.strftime('%Y-%m-%d')}"),
    )
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(35, 6, _latin1(label))
        pdf.set_font("Helvetica", size=10)
        pdf.cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 9)
    for title, width in COLUMNS:
        pdf.cell(width, 7, title, border=1, align="R" if title in ("Quantity", "Unit price", "Amount") else "L")
    pdf.ln()
    pdf.set_font("Helvetica", size=9)
    for item in quotation.items:
        values = (item.country or "-", item.market, item.category.title() + ("*" if item.tier_from else ""),
                  f"{item.quantity:,}", format_micros(item.unit_price_micros), format_micros(item.amount_micros))
        for (title, width), value in zip(COLUMNS, values):
            pdf.cell(width, 6, _latin1(value), border=1,
                     align="R" if title in ("Quantity", "Unit price", "Amount") else "L")
        pdf.ln()
    banded = [item for item in quotation.items if item.tier_from is not None]
    if banded:
        pdf.set_font("Helvetica", size=7)
        pdf.multi_cell(0, 4, _latin1("* volume tier: " + "; ".join(
            f"{item.country or '-'}{_band(item)}" for item in banded)), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    totals = [("Meta rates (after volume tiers)", quotation.subtotal_micros),
              ("Platform fees", quotation.fees_micros)]
    totals += [(_latin1(a["description"]), to_micros(a["amount"]))
               for a in quotation.adjustments]
    if not quotation.adjustments:
        totals.append(("Minimum charge top-up", quotation.minimum_topup_micros))
    totals.append(("Total", quotation.total_micros))
    for label, micros in totals:
        pdf.set_font("Helvetica", "B" if label == "Total" else "", 10)
        pdf.cell(156, 6, label, align="R")
        pdf.cell(34, 6, _money(micros, quotation.currency), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", size=8)
    pdf.multi_cell(0, 4, _latin1(
        "Prices are per delivered template message, in the currency shown, from the rate card snapshot named "
        "above; a later rate card does not change this quotation. Valid until the date above."))
    return bytes(pdf.output())
