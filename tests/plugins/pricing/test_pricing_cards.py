"""Reading Meta's Pricing.csv and Tier Pricing.csv layouts, and refusing bad files whole with every problem listed."""

from __future__ import annotations

import pytest

from kloyst_plugins.pricing import cards, markets
from kloyst_plugins.pricing.snapshots import SEED

KNOWN = set(markets.MARKETS)
HEADER = 'Market,Currency,Marketing,Utility,Authentication,"Authentication-\nInternational",Service\n'
METADATA = "Rate card\nEffective July 1 2025\nnote\nmore notes\n\n"


def pricing_text(rows: dict[str, str] | None = None, *, header: str = HEADER) -> str:
    """A full card (every market) in Meta's layout; ``rows`` replaces the line of some markets."""
    rows = rows or {}
    body = "".join(rows.get(m, f"{m},$US,0.0500,0.0100,0.0100,n/a,0.00") + "\n" for m in markets.MARKETS)
    return METADATA + header + body


def test_the_development_card_reads_with_its_quoted_newline_header_and_us_dollar_token():
    card = cards.parse_pricing((SEED / "Pricing.csv").read_text(), known_markets=KNOWN)

    assert card.currency == "USD"
    assert set(card.markets) == KNOWN
    assert card.rates[("Brazil", "MARKETING")] == 62_500
    assert card.rates[("India", "AUTHENTICATION_INTERNATIONAL")] == 28_000
    assert card.rates[("Rest of Africa", "UTILITY")] == 4_000
    assert card.rates[("Other", "SERVICE")] == 0


def test_n_a_means_no_rate_in_that_category():
    card = cards.parse_pricing((SEED / "Pricing.csv").read_text(), known_markets=KNOWN)
    assert ("Brazil", "AUTHENTICATION_INTERNATIONAL") not in card.rates
    assert ("Brazil", "AUTHENTICATION") in card.rates


def test_columns_are_found_by_name_whatever_their_order_and_the_metadata_rows():
    header = 'Currency,Market,Utility,Marketing,Authentication,"Authentication-\nInternational",Service\n'
    text = "only one metadata row\n" + header + "".join(
        f"$US,{m},0.0100,0.0500,0.0100,n/a,0\n" for m in markets.MARKETS)

    card = cards.parse_pricing(text, known_markets=KNOWN)

    assert card.rates[("Brazil", "MARKETING")] == 50_000
    assert card.rates[("Brazil", "UTILITY")] == 10_000


def test_every_bad_row_is_reported_with_its_line_number():
    text = pricing_text({"Brazil": "Brazil,$US,cheap,0.01,0.01,n/a,0",
                         "Chile": "Chile,$US,0.05,,0.01,n/a,0",
                         "Egypt": "Egypt,€,0.05,0.01,0.01,n/a,0",
                         "Spain": "Atlantis,$US,0.05,0.01,0.01,n/a,0"})

    with pytest.raises(cards.CardError) as caught:
        cards.parse_pricing(text, known_markets=KNOWN)

    problems = caught.value.problems
    lines = text.splitlines()
    by_line = {p["line"]: p["problem"] for p in problems if p["line"]}
    brazil = next(i + 1 for i, line in enumerate(lines) if line.startswith("Brazil"))
    assert "MARKETING" in by_line[brazil] and "cheap" in by_line[brazil]
    assert "empty rate" in by_line[brazil + 1]  # Chile follows Brazil
    atlantis = next(i + 1 for i, line in enumerate(lines) if line.startswith("Atlantis"))
    assert "Atlantis" in by_line[atlantis]
    summary = " ".join(p["problem"] for p in problems)
    assert "one currency" in summary  # € next to $US
    assert "Spain" in summary  # the market the renamed row left without a rate
    assert len(problems) >= 5


def test_line_numbers_count_physical_lines_after_the_quoted_newline():
    text = pricing_text({"Argentina": "Argentina,$US,-0.01,0.01,0.01,n/a,0"})
    with pytest.raises(cards.CardError) as caught:
        cards.parse_pricing(text, known_markets=KNOWN)
    # 5 metadata rows, the header on lines 6-7, Argentina (first market) on line 8.
    assert caught.value.problems[0]["line"] == 8
    assert "negative" in caught.value.problems[0]["problem"]


def test_a_file_without_the_header_is_refused_plainly():
    with pytest.raises(cards.CardError) as caught:
        cards.parse_pricing("hello,world\n1,2\n", known_markets=KNOWN)
    assert "Market" in caught.value.problems[0]["problem"]


def test_tier_blocks_carry_the_market_from_their_first_row():
    bands = cards.parse_tiers((SEED / "Tier Pricing.csv").read_text(), currency="USD", markets=KNOWN)

    india = [b for b in bands if b.market == "India" and b.category == "UTILITY"]
    assert [(b.band_from, b.band_to) for b in india] == [
        (1, 100_000), (100_001, 500_000), (500_001, 2_000_000), (2_000_001, 5_000_000), (5_000_001, 10_000_000),
        (10_000_001, None)]
    assert [b.discount_micropercent for b in india] == [0, -5_000_000, -10_000_000, -15_000_000, -20_000_000,
                                                        -25_000_000]
    assert india[0].rate_type == "LIST" and india[1].rate_type == "TIER"
    assert india[1].rate_micros == 1_330  # 0.0014 less 5 %
    assert {b.category for b in bands if b.market == "India"} == {
        "UTILITY", "AUTHENTICATION", "AUTHENTICATION_INTERNATIONAL"}
    assert not [b for b in bands if b.market == "Brazil" and b.category == "AUTHENTICATION_INTERNATIONAL"]


TIER_HEAD = ("title\nnote\n,,Utility,,,,,Authentication,,,,,Authentication-International,,,,\n"
             ",,Messages per month,,What we charge,,,,,,,,,,,,\n"
             '"Market\n(per rate card)",Currency' + ",From,To,Rate type,Rate,vs. List rate" * 3 + "\n")
NA = ",n/a,n/a,n/a,n/a,n/a"


def test_shared_band_edges_are_read_as_consecutive_bands():
    text = TIER_HEAD + "Brazil,$US,0,\"1,000\",LIST,0.0068,0%" + NA + NA + "\n" \
                       ",,\"1,000\",--,TIER,0.0060,-10%" + NA + NA + "\n"
    bands = cards.parse_tiers(text, currency="USD", markets=KNOWN)
    assert [(b.band_from, b.band_to, b.rate_micros) for b in bands] == [(1, 1_000, 6_800), (1_001, None, 6_000)]


def test_bad_tier_rows_are_all_reported():
    text = (TIER_HEAD
            + "Brazil,$US,1,\"1,000\",LIST,0.0068,0%" + NA + NA + "\n"
            + ",,\"5,000\",--,TIER,0.0060,-10%" + NA + NA + "\n"  # a gap after 1,000
            + "Narnia,$US,1,--,LIST,0.01,0%" + NA + NA + "\n"
            + "Chile,EUR,1,--,SPECIAL,0.01,0%" + NA + NA + "\n"
            + "Peru,$US,1,--,LIST,0.01\n")
    with pytest.raises(cards.CardError) as caught:
        cards.parse_tiers(text, currency="USD", markets=KNOWN)
    summary = [(p["line"], p["problem"]) for p in caught.value.problems]
    text_of = " | ".join(problem for _, problem in summary)
    assert "Narnia" in text_of
    assert "EUR" in text_of
    assert "SPECIAL" in text_of
    assert "expected 17 columns, found 6" in text_of
    assert "does not follow" in text_of
    assert {line for line, _ in summary} >= {9, 10, 11}
