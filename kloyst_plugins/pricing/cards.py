"""Reading Meta's rate-card downloads: ``Pricing.csv`` and ``Tier Pricing.csv``, exactly as Meta writes them.

``Pricing.csv``: a few metadata rows, then a header ``Market, Currency, Marketing, Utility,
Authentication, Authentication-International, Service`` (the Auth-Intl cell holds a quoted
newline), then one row per market; the currency is a token such as ``$US``; a category a
market does not have is ``n/a``.

``Tier Pricing.csv``: title, note, a row of section names (Utility, Authentication,
Authentication-International), a row of sub-headers, the column headers, then 17 columns per
row — Market, Currency and (From, To, Rate type, Rate, vs-list %) for each section — with the
market written only on the first row of its block of bands.

Headers are found by their text, not by a fixed row count, and columns by name, so a card
with one metadata row more or the columns in another order still reads. Nothing is
half-read: every problem found is collected with its physical line number and returned
together (:class:`CardError`), and the caller saves nothing unless there are none.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from kloyst.api import MoneyError, to_micros
from kloyst_plugins.pricing.models import Category

# Meta's currency tokens (``$US``) and the symbols other cards use, to ISO 4217.
CURRENCY_TOKENS = {"$US": "USD", "US$": "USD", "$": "USD", "A$": "AUD", "AU$": "AUD", "£": "GBP", "GBD": "GBP",
                   "€": "EUR", "₹": "INR", "RP": "IDR", "R$": "BRL", "MX$": "MXN"}
NOT_APPLICABLE = {"n/a", "na", "-", "--", "—"}
UNBOUNDED = {"--", "-", "—", "", "n/a", "no limit", "unlimited", "∞"}

_PRICING_COLUMNS = {"market": "market", "currency": "currency", "marketing": Category.MARKETING.value,
                    "utility": Category.UTILITY.value, "authentication": Category.AUTHENTICATION.value,
                    "authenticationinternational": Category.AUTHENTICATION_INTERNATIONAL.value,
                    "service": Category.SERVICE.value}
_REQUIRED = ("market", "currency", Category.MARKETING.value, Category.UTILITY.value, Category.AUTHENTICATION.value)
_TIER_SECTIONS = (Category.UTILITY.value, Category.AUTHENTICATION.value, Category.AUTHENTICATION_INTERNATIONAL.value)
TIER_COLUMNS = 2 + 5 * len(_TIER_SECTIONS)


@dataclass
class Card:
    currency: str
    rates: dict[tuple[str, str], int]  # (market, category) → micros; n/a has no key
    markets: list[str]


@dataclass(frozen=True)
class Band:
    market: str
    category: str
    band_from: int
    band_to: int | None
    rate_type: str
    rate_micros: int
    discount_micropercent: int


@dataclass
class CardError(Exception):
    problems: list[dict] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{p['file']} line {p['line']}: {p['problem']}" for p in self.problems[:5])


class _Problems:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[dict] = []

    def add(self, line: int, problem: str) -> None:
        self.items.append({"file": self.file, "line": line, "problem": problem})


def _key(cell: str) -> str:
    """A header cell as a key: ``"Authentication-\\nInternational"`` → ``"authenticationinternational"``,
    ``"Market\\n(per rate card)"`` → ``"market"``."""
    text = re.sub(r"\(.*?\)", "", cell or "", flags=re.S)
    return re.sub(r"[^a-z]", "", text.lower())


def _rows(text: str, problems: _Problems) -> list[tuple[int, list[str]]]:
    """``(first physical line, cells)`` of every CSV record; quoted newlines keep a record on several lines.

    Something that is not CSV at all (a NUL byte, an image decoded as Windows-1252) is a
    :class:`CardError` naming the line, never a crash.
    """
    reader = csv.reader(io.StringIO(text, newline=None))  # universal newlines: a lone \r ends a line too
    rows, line = [], 1
    try:
        for cells in reader:
            rows.append((line, [c.strip() for c in cells]))
            line = reader.line_num + 1
    except csv.Error as exc:
        problems.add(reader.line_num, f"not a CSV file: {exc}")
        raise CardError(problems.items) from None
    return rows


def _header_index(rows) -> int | None:
    """The header row: the first with both a Market and a Currency column."""
    for index, (_, cells) in enumerate(rows):
        keys = {_key(c) for c in cells}
        if {"market", "currency"} <= keys:
            return index
    return None


def decode(data: bytes, file: str) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CardError([{"file": file, "line": 0, "problem": "not a text file (neither UTF-8 nor Windows-1252)"}])


def currency_of(token: str) -> str | None:
    text = token.strip()
    code = CURRENCY_TOKENS.get(text.upper(), CURRENCY_TOKENS.get(text))
    if code is None and re.fullmatch(r"[A-Za-z]{3}", text):
        code = text.upper()
    return code


def _money(cell: str) -> int:
    text = cell.replace(",", "").replace("$", "").strip()
    return to_micros(text, field="rate")


def parse_pricing(text: str, *, known_markets: set[str]) -> Card:
    """Read ``Pricing.csv``; raise :class:`CardError` listing every problem."""
    problems = _Problems("pricing")
    rows = _rows(text, problems)
    header_at = _header_index(rows)
    if header_at is None:
        problems.add(0, "no header row with Market and Currency columns (is this Meta's Pricing.csv?)")
        raise CardError(problems.items)
    header_line, header = rows[header_at]
    columns = {_PRICING_COLUMNS[_key(c)]: i for i, c in enumerate(header) if _key(c) in _PRICING_COLUMNS}
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        problems.add(header_line, f"missing column(s): {', '.join(missing)}")
        raise CardError(problems.items)
    currencies: set[str] = set()
    rates: dict[tuple[str, str], int] = {}
    seen: dict[str, int] = {}
    for line, cells in rows[header_at + 1:]:
        if not any(cells):
            continue
        cells = cells + [""] * (len(header) - len(cells))
        market = cells[columns["market"]]
        if not market:
            problems.add(line, "no market name")
            continue
        if market in seen:
            problems.add(line, f"market {market!r} already given on line {seen[market]}")
            continue
        seen[market] = line
        if market not in known_markets:
            problems.add(line, f"market {market!r} is not a market any country is priced in")
        currency = currency_of(cells[columns["currency"]])
        if currency is None:
            problems.add(line, f"currency {cells[columns['currency']]!r} is not a currency token ($US, EUR, …)")
        else:
            currencies.add(currency)
        for category, index in columns.items():
            if category in ("market", "currency"):
                continue
            cell = cells[index]
            if cell.lower() in NOT_APPLICABLE:
                continue
            if not cell:
                problems.add(line, f"{category}: empty rate (write n/a when the market has none)")
                continue
            try:
                rates[(market, category)] = _money(cell)
            except MoneyError as exc:
                problems.add(line, f"{category}: {exc}")
    if len(currencies) > 1:
        problems.add(header_line, f"one card, one currency: found {', '.join(sorted(currencies))}")
    absent = sorted(known_markets - set(seen))
    if seen and absent:
        problems.add(0, f"market(s) without a row: {', '.join(absent)}")
    if not seen:
        problems.add(header_line, "no market rows after the header")
    if problems.items:
        raise CardError(problems.items)
    return Card(currency=currencies.pop(), rates=rates, markets=list(seen))


def _sections(rows, header_at: int) -> tuple[str, ...]:
    """The section order, from the row of section names above the headers when there is one."""
    for _, cells in reversed(rows[:header_at]):
        names = [_PRICING_COLUMNS.get(_key(c)) for c in cells if _key(c) in _PRICING_COLUMNS]
        if len(names) == len(_TIER_SECTIONS) and set(names) == set(_TIER_SECTIONS):
            return tuple(names)
    return _TIER_SECTIONS


def _percent(cell: str) -> int:
    text = cell.replace("%", "").replace("−", "-").strip() or "0"
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{cell!r} is not a percentage") from None
    return int(value * 1_000_000)


def _volume(cell: str) -> int | None:
    text = cell.replace(",", "").replace(" ", "").strip()
    if text.lower() in UNBOUNDED:
        return None
    if not text.isdigit():
        raise ValueError(f"{cell!r} is not a message count")
    return int(text)


def parse_tiers(text: str, *, currency: str, markets: set[str]) -> list[Band]:
    """Read ``Tier Pricing.csv`` for a card in ``currency`` with ``markets``; raise :class:`CardError`."""
    problems = _Problems("tiers")
    rows = _rows(text, problems)
    header_at = _header_index(rows)
    if header_at is None:
        problems.add(0, "no header row with Market and Currency columns (is this Meta's Tier Pricing.csv?)")
        raise CardError(problems.items)
    sections = _sections(rows, header_at)
    bands: list[Band] = []
    market = None
    for line, cells in rows[header_at + 1:]:
        if not any(cells):
            continue
        if len(cells) != TIER_COLUMNS:
            problems.add(line, f"expected {TIER_COLUMNS} columns, found {len(cells)}")
            continue
        if cells[0]:
            market = cells[0]
            if market not in markets:
                problems.add(line, f"market {market!r} is not on the pricing card")
        elif market is None:
            problems.add(line, "a band before any market name")
            continue
        if cells[1] and currency_of(cells[1]) != currency:
            problems.add(line, f"currency {cells[1]!r} differs from the pricing card's {currency}")
        for index, category in enumerate(sections):
            group = cells[2 + 5 * index: 7 + 5 * index]
            if all(c.lower() in NOT_APPLICABLE or not c for c in group):
                continue
            start, end, rate_type, rate, percent = group
            try:
                band_from = _volume(start)
                if band_from is None:
                    raise ValueError("'From' must be a message count")
                band_to = _volume(end)
                if band_to is not None and band_to < band_from:
                    raise ValueError(f"'To' {band_to} is below 'From' {band_from}")
                kind = rate_type.upper()
                if kind not in ("LIST", "TIER"):
                    raise ValueError(f"rate type {rate_type!r} is neither LIST nor TIER")
                bands.append(Band(market, category, band_from, band_to, kind, _money(rate), _percent(percent)))
            except (ValueError, MoneyError) as exc:
                problems.add(line, f"{category}: {exc}")
    bands = _normalised(bands, problems)
    if problems.items:
        raise CardError(problems.items)
    return bands


def _normalised(bands: list[Band], problems: _Problems) -> list[Band]:
    """Each market's bands of a category, as inclusive message ranges 1…, each after the previous, open only last.

    Meta's files write a band boundary either inclusively (1–100,000 then 100,001–…) or as a
    shared edge (0–100,000 then 100,000–…); both are read as messages 1…100,000, then 100,001….
    """
    by_key: dict[tuple[str, str], list[Band]] = {}
    for band in bands:
        by_key.setdefault((band.market, band.category), []).append(band)
    result: list[Band] = []
    for (market, category), group in by_key.items():
        group.sort(key=lambda b: b.band_from)
        expected = 1
        for band in group:
            if band.band_from not in (expected, expected - 1):
                problems.add(0, f"{market} {category}: the band from {band.band_from:,} does not follow the one "
                                f"ending at {expected - 1:,}")
                break
            if band.band_to is not None and band.band_to < expected:
                problems.add(0, f"{market} {category}: the band {band.band_from:,}–{band.band_to:,} is empty")
                break
            result.append(Band(market, category, expected, band.band_to, band.rate_type, band.rate_micros,
                               band.discount_micropercent))
            if band.band_to is None:
                if band is not group[-1]:
                    problems.add(0, f"{market} {category}: only the last band may be open-ended")
                break
            expected = band.band_to + 1
    return result
