"""The quotation PDF a customer accepts: names in any script intact, the issuer from settings, money as people
write it, no internal identifiers, and one clear error when the deployment lacks a font or an issuer."""

from __future__ import annotations

import io
import logging
import os
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from kloyst_plugins.pricing import fonts, pdf, plugin, shaping
from kloyst_plugins.pricing.models import PricingSnapshot
from kloyst_plugins.pricing.tasks import GENERATE_PDF

NAMES = {
    "latin and devanagari": "Café Ünïcode — भारत Traders",
    "devanagari": "भारत व्यापार केंद्र",
    "arabic": "شركة النور للتجارة",
    "chinese": "上海贸易有限公司",
    "japanese": "東京トレーディング株式会社",
    "korean": "서울 무역 회사",
    "emoji": "Rocket 🚀 Snacks 🍕",
}


def text_of(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


@pytest.fixture
def render(db, registry, service):
    """``render(account, counts, settings=None, name=None)``: a quotation priced for ``account``, as PDF bytes."""

    def make(account, counts: dict, *, settings: dict | None = None, name: str | None = None,
             category: str = "MARKETING"):
        quotation = service(account).quote(counts, category)
        db.commit()
        return quotation, pdf.render(quotation, db.get(PricingSnapshot, quotation.snapshot_id),
                                     name if name is not None else account.vendor.name,
                                     {**registry.settings, **(settings or {})})

    return make


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_a_vendor_name_in_any_script_comes_out_of_the_pdf_as_written(render, vendor, name):
    _quotation, content = render(vendor, {"IN": 3}, name=name)

    text = text_of(content)
    assert name in text
    assert text.count(name) == 1  # a shaped line's outlines carry no text of their own: no second copy


def test_only_lines_in_scripts_that_need_shaping_are_drawn_as_outlines():
    assert shaping.needs_shaping("शर्मा") and shaping.needs_shaping("شركة") and shaping.needs_shaping("สวัสดี")
    assert not any(shaping.needs_shaping(text) for text in ("Café Ünïcode", "上海贸易", "서울", "Love ❤️", "Ωμέγα"))


def test_the_issuer_name_and_address_come_from_settings(render, vendor):
    issuer = {"pricing.issuer_name": "Kloyst Técnologies — ख़ास",
              "pricing.issuer_address": ("12 MG Road", "Bengaluru 560001")}
    _quotation, content = render(vendor, {"BR": 1}, settings=issuer)

    text = text_of(content)
    assert "Kloyst Técnologies — ख़ास" in text
    assert "12 MG Road" in text and "Bengaluru 560001" in text


@pytest.mark.parametrize("written", ["\n12 MG Road\n  Bengaluru  560001\nIndia", "12 MG Road; Bengaluru 560001;India;"])
def test_the_issuer_address_is_ini_lines_or_semicolon_separated(written):
    assert plugin.as_lines(written) == ("12 MG Road", "Bengaluru 560001", "India")


def test_money_is_written_with_the_currencys_symbol_and_minor_units(render, vendor):
    _quotation, content = render(vendor, {"BR": 2, "KE": 1})

    text = text_of(content)
    # Brazil 2 × 0.0625 = 0.125, Kenya (Rest of Africa) 1 × 0.0225; total 0.1475 USD.
    for expected in ("$0.0625", "$0.13", "$0.0225", "$0.02", "Total (USD)", "$0.15", "US Dollar (USD)"):
        assert expected in text, expected
    assert "0.062500" not in text and "0.147500" not in text


@pytest.mark.parametrize(("micros", "currency", "shown"), [
    (1_234_500_000, "INR", "₹1,234.50"), (30_000, "USD", "$0.03"), (120_400_000, "JPY", "¥120"),
    (1_234_567, "KWD", "KWD1.235"), (5_000, "USD", "$0.01"), (-2_500_000, "EUR", "-€2.50")])
def test_amounts_are_rounded_half_up_to_the_minor_unit(micros, currency, shown):
    assert pdf.amount(micros, currency) == shown


@pytest.mark.parametrize(("micros", "shown"), [(6_800, "$0.0068"), (62_500, "$0.0625"), (500_000, "$0.50"),
                                               (2_000_000, "$2.00")])
def test_unit_prices_keep_every_digit_meta_publishes(micros, shown):
    assert pdf.unit_price(micros, "USD") == shown


def test_the_page_carries_no_internal_identifier(render, vendor, card):
    quotation, content = render(vendor, {"BR": 1})

    text = text_of(content)
    assert str(card.id) not in text and str(quotation.id) not in text and "snapshot" not in text.lower()
    assert pdf.reference(quotation) in text
    assert "Meta's rate card effective 1 July 2025" in text
    assert "Brazil" in text and "Marketing template messages to 1 recipient" in text


def test_every_quotation_the_service_creates_asks_for_its_pdf(service, vendor, requested_tasks):
    quotation = service(vendor).quote({"BR": 1}, "MARKETING")

    assert requested_tasks == [(GENERATE_PDF, {"vendor_id": vendor.vendor_id, "quotation_id": quotation.id})]


def test_without_an_issuer_the_pdf_fails_with_one_clear_error(render, vendor):
    with pytest.raises(pdf.IssuerMissing, match="PRICING_ISSUER_NAME"):
        render(vendor, {"BR": 1}, settings={"pricing.issuer_name": "  "})


def test_without_the_noto_fonts_the_pdf_fails_naming_the_packages_to_install(render, vendor, tmp_path):
    with pytest.raises(fonts.FontsMissing, match="fonts-noto-core") as failure:
        render(vendor, {"BR": 1}, settings={"pricing.font_dirs": [str(tmp_path)]})

    assert "NotoSans-Regular.ttf" in str(failure.value) and "PRICING_FONT_DIRS" in str(failure.value)


def test_a_name_needing_a_font_package_not_installed_fails_naming_that_package(render, vendor, tmp_path):
    installed = fonts.font_set(fonts.DEFAULT_FONT_DIRS)
    for face in (installed.regular, installed.bold):  # Noto Sans alone: no CJK face
        os.symlink(face.path, tmp_path / face.path.name)

    with pytest.raises(fonts.FontsMissing, match="fonts-wqy-microhei"):
        render(vendor, {"BR": 1}, name="上海贸易有限公司", settings={"pricing.font_dirs": [str(tmp_path)]})


def test_a_latin_page_embeds_noto_sans_alone_and_a_hindi_one_adds_devanagari_only():
    installed = fonts.font_set(fonts.DEFAULT_FONT_DIRS)

    assert installed.fallbacks_for("Café Ünïcode — Traders, 1,234.50 $ € ₹") == ([], frozenset())
    chosen, undrawable = installed.fallbacks_for("भारत Traders")
    assert [face.path.name for face in chosen] == ["NotoSansDevanagari-Regular.ttf"] and not undrawable


def test_a_character_no_font_draws_is_shown_as_the_replacement_character(render, vendor):
    _quotation, content = render(vendor, {"BR": 1}, name="Private \ue000 Use")

    assert "Private \N{REPLACEMENT CHARACTER} Use" in text_of(content)


def test_a_quotation_over_many_countries_names_each_in_english(render, vendor):
    counts = {country: 10 for country in ("AE", "AR", "BR", "CN", "DE", "EG", "FR", "GB", "ID", "IN", "IT", "JP",
                                          "KE", "MX", "MY", "NG", "PK", "RU", "SA", "TR", "US", "ZA", "ES", "NL",
                                          "CO", "CL", "PE", "PH", "TH", "VN", "BD", "KR", "IL", "PL")}

    _quotation, content = render(vendor, counts)

    text = text_of(content)
    for country in ("United Arab Emirates", "South Africa", "Netherlands", "Vietnam", "Saudi Arabia"):
        assert country in text, country


@pytest.mark.parametrize(("mode", "warned"), [("WORKER", True), ("ALL", True), ("API_GATEWAY", False)])
def test_a_process_that_renders_pdfs_says_at_start_what_would_fail_them(registry, caplog, tmp_path, mode, warned):
    bare = SimpleNamespace(settings={**registry.settings, "pricing.issuer_name": "",
                                     "pricing.font_dirs": [str(tmp_path)]})

    with caplog.at_level(logging.WARNING, logger=plugin.__name__):
        assert plugin.kloyst_background_services(registry=bare, mode=mode) == []

    said = [record.getMessage() for record in caplog.records]
    if warned:
        assert len(said) == 2 and "PRICING_ISSUER_NAME" in said[0] and "fonts-noto-core" in said[1]
    else:
        assert said == []
