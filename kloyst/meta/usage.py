"""Meta's usage headers, read on every answer so senders can slow down before Meta says 4 or 80007.

``x-app-usage`` is ``{"call_count": %, "total_cputime": %, "total_time": %}`` for the whole app;
``x-business-use-case-usage`` is ``{"<business id>": [{"type", "call_count", "total_cputime", "total_time",
"estimated_time_to_regain_access"}, …]}`` (percentages of the allowance; regain time in minutes). A missing or
malformed header gives an empty part, never an exception: throttling is advice, the call itself succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BusinessUseCaseUsage:
    business_id: str
    type: str
    call_count: float
    total_cputime: float
    total_time: float
    estimated_time_to_regain_access: float  # minutes


@dataclass(frozen=True)
class Usage:
    app: Mapping[str, float] = field(default_factory=dict)
    business: tuple[BusinessUseCaseUsage, ...] = ()

    @property
    def max_percent(self) -> float:
        """The highest share of any allowance used, 0–100: above ~80 a caller should slow down."""
        values = list(self.app.values())
        for entry in self.business:
            values += [entry.call_count, entry.total_cputime, entry.total_time]
        return max(values, default=0.0)

    @property
    def regain_access_minutes(self) -> float:
        return max((entry.estimated_time_to_regain_access for entry in self.business), default=0.0)

    def __bool__(self) -> bool:
        return bool(self.app or self.business)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _json(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def parse_usage(headers: Mapping[str, str]) -> Usage:
    app = _json(headers.get("x-app-usage"))
    app_usage = {key: _number(value) for key, value in app.items()} if isinstance(app, dict) else {}
    business: list[BusinessUseCaseUsage] = []
    buc = _json(headers.get("x-business-use-case-usage"))
    if isinstance(buc, dict):
        for business_id, entries in buc.items():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict):
                    business.append(BusinessUseCaseUsage(
                        str(business_id), str(entry.get("type", "")), _number(entry.get("call_count")),
                        _number(entry.get("total_cputime")), _number(entry.get("total_time")),
                        _number(entry.get("estimated_time_to_regain_access"))))
    return Usage(app_usage, tuple(business))
