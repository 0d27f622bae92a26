"""Business hours: a weekly schedule in the vendor's time zone, and whether a moment falls inside it.

A schedule maps weekdays (``mon`` … ``sun``) to open intervals in local wall-clock time,
``[["09:00", "13:00"], ["14:00", "18:00"]]``; ``"24:00"`` ends a day. A day that is not listed,
or lists nothing, is closed all day. The moment is converted to the zone with :mod:`zoneinfo`,
so daylight-saving changes move the hours with the local clock, as a shop's sign does.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_INTERVALS = 6
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``); ValueError naming it when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. 'Europe/Berlin', 'America/New_York', "
                         "'UTC')") from None


def minutes(clock: str) -> int:
    """``"09:30"`` → 570; ValueError for anything but HH:MM from 00:00 to 24:00."""
    if not isinstance(clock, str) or not _CLOCK.match(clock):
        raise ValueError(f"{clock!r} is not a time of day as HH:MM (00:00 to 24:00)")
    hours, mins = clock.split(":")
    return int(hours) * 60 + int(mins)


def check(schedule: dict) -> dict[str, list[list[str]]]:
    """``schedule`` if it is a valid weekly schedule (intervals sorted); ValueError naming the first problem."""
    checked: dict[str, list[list[str]]] = {}
    for day, intervals in schedule.items():
        if day not in DAYS:
            raise ValueError(f"{day!r} is not a day: use {', '.join(DAYS)}")
        if not isinstance(intervals, list) or len(intervals) > MAX_INTERVALS:
            raise ValueError(f"{day}: a list of at most {MAX_INTERVALS} [opens, closes] intervals")
        spans = []
        for interval in intervals:
            if not isinstance(interval, list) or len(interval) != 2:
                raise ValueError(f"{day}: each interval is [opens, closes], e.g. [\"09:00\", \"17:00\"]")
            opens, closes = minutes(interval[0]), minutes(interval[1])
            if opens >= closes:
                raise ValueError(f"{day}: {interval[0]}–{interval[1]} closes before it opens")
            spans.append((opens, closes, interval))
        spans.sort()
        for before, after in zip(spans, spans[1:]):
            if after[0] < before[1]:
                raise ValueError(f"{day}: {before[2][0]}–{before[2][1]} and {after[2][0]}–{after[2][1]} overlap")
        checked[day] = [list(span[2]) for span in spans]
    return checked


def is_open(schedule: dict, time_zone: str, at: dt.datetime) -> bool:
    """Whether the business is open at ``at`` (an aware datetime) by ``schedule`` in ``time_zone``."""
    local = at.astimezone(zone(time_zone))
    now = local.hour * 60 + local.minute
    return any(minutes(opens) <= now < minutes(closes) for opens, closes in schedule.get(DAYS[local.weekday()], ()))
