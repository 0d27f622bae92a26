"""Country → Meta pricing market, for every country a phone number can belong to.

Meta prices a message by the recipient's calling code, in a market: a named country
("Brazil") or a regional group ("Rest of Africa"), and "Other" for everything else. The
groups below are Meta's published lists (with Zimbabwe in Rest of Africa from October 2025
and the United States and Canada as North America). Every region the ``phonenumbers``
library knows gets a market — the named or grouped ones from these tables, the rest
"Other" — so no contact is ever unpriceable. A snapshot stores the mapping it was priced
with (:class:`~.models.PricingMarket`), so a country Meta moves later does not reprice
earlier quotes; an upload may override single countries.
"""

from __future__ import annotations

import phonenumbers

OTHER = "Other"

NAMED = {
    "AR": "Argentina", "BR": "Brazil", "CL": "Chile", "CO": "Colombia", "EG": "Egypt", "FR": "France",
    "DE": "Germany", "IN": "India", "ID": "Indonesia", "IL": "Israel", "IT": "Italy", "MY": "Malaysia",
    "MX": "Mexico", "NL": "Netherlands", "NG": "Nigeria", "PK": "Pakistan", "PE": "Peru", "RU": "Russia",
    "SA": "Saudi Arabia", "ZA": "South Africa", "ES": "Spain", "TR": "Turkey", "AE": "United Arab Emirates",
    "GB": "United Kingdom",
}

GROUPS = {
    "North America": "US CA",
    "Rest of Africa": "DZ AO BJ BW BF BI CM TD CG ER ET GA GM GH GW CI KE LS LR LY MG MW ML MR MA MZ NA NE RW SN "
                      "SL SO SS SD SZ TZ TG TN UG ZM ZW",
    "Rest of Asia Pacific": "AF AU BD KH CN HK JP LA MN NP NZ PG PH SG LK TW TJ TH TM UZ VN",
    "Rest of Central & Eastern Europe": "AL AM AZ BY BG HR CZ GE GR HU LV LT MK MD PL RO RS SK SI UA",
    "Rest of Latin America": "BO CR DO EC SV GT HT HN JM NI PA PY PR UY VE",
    "Rest of Middle East": "BH IQ JO KW LB OM QA YE",
    "Rest of Western Europe": "AT BE DK FI IE NO PT SE CH",
}

MARKETS = (*sorted(set(NAMED.values())), *GROUPS, OTHER)


def _grouped() -> dict[str, str]:
    mapping = {country: market for market, countries in GROUPS.items() for country in countries.split()}
    mapping.update(NAMED)
    return mapping


def default_mapping() -> dict[str, tuple[int, str]]:
    """``{country: (calling_code, market)}`` for every region ``phonenumbers`` knows (and "001", non-geographic)."""
    grouped = _grouped()
    mapping: dict[str, tuple[int, str]] = {}
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            mapping.setdefault(region, (code, grouped.get(region, OTHER)))
    return mapping


def calling_code(country: str) -> int:
    return phonenumbers.country_code_for_region(country) or 0
