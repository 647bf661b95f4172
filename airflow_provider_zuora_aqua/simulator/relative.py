"""Export ZOQL's relative date expressions: ``'now - 1 day'``, ``'today - 30 days (America/Los_Angeles)'``.

Zuora's "Special date/time features in Export ZOQL" (Export ZOQL only, "not supported in standard
ZOQL")::

    now/today +/- quantity unit-of-time (time zone)

* ``now`` is a date-time, matched exactly; ``today`` is a date, a whole day of date-times (so
  ``= 'today - 1 day'`` is all of yesterday, ``< 'today - 30 days'`` before that day's midnight);
* units: second, minute, hour, day, week, month, year (a plural ``s`` is accepted, as in
  Zuora's ``30 days``);
* the time zone, in parentheses, is an offset (``-08:00``), a tz database name
  (``America/Los_Angeles``) or its city with spaces (``Los Angeles``); without one, the tenant's.

Offsets are calendar arithmetic on the local wall clock, so ``now - 1 day`` across a
daylight-saving change spans 23 or 25 hours, as Zuora notes. Read at submit, with the tenant's clock.
"""

from __future__ import annotations

import calendar
import functools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo

_RELATIVE = re.compile(
    r"(?P<anchor>now|today)"
    r"(?:\s*(?P<sign>[+-])\s*(?P<quantity>\d+)\s*(?P<unit>second|minute|hour|day|week|month|year)s?)?"
    r"(?:\s*\((?P<zone>[^()]+)\))?",
    re.IGNORECASE,
)
_OFFSET = re.compile(r"(?P<sign>[+-])(?P<hours>\d{2}):?(?P<minutes>\d{2})")


@dataclass(frozen=True)
class DayRange:
    """A whole day of date-times, ``[start, end)`` in UTC; ``day`` is the local date."""

    day: date
    start: datetime
    end: datetime


def parse_relative(text: str, tenant_zone: tzinfo, now: datetime) -> datetime | DayRange | None:
    """The instant (``now ...``) or day (``today ...``) an expression names; None if it is not one.

    ValueError for an unknown time zone.
    """
    found = _RELATIVE.fullmatch(text.strip())
    if found is None:
        return None
    zone = tenant_zone if found["zone"] is None else _zone(found["zone"].strip())
    wall = now.astimezone(zone).replace(tzinfo=None, microsecond=0)
    if found["anchor"].lower() == "today":
        wall = datetime.combine(wall.date(), time())
    if found["sign"]:
        quantity = int(found["quantity"]) * (-1 if found["sign"] == "-" else 1)
        wall = _shift(wall, quantity, found["unit"].lower())
    if found["anchor"].lower() == "now":
        return _utc(wall, zone)
    day = wall.date()
    return DayRange(
        day, _utc(datetime.combine(day, time()), zone), _utc(datetime.combine(day + timedelta(1), time()), zone)
    )


def _shift(wall: datetime, quantity: int, unit: str) -> datetime:
    if unit in ("month", "year"):
        months = wall.year * 12 + wall.month - 1 + quantity * (12 if unit == "year" else 1)
        year, month = divmod(months, 12)
        # The 31st of a shorter month is its last day.
        day = min(wall.day, calendar.monthrange(year, month + 1)[1])
        return wall.replace(year=year, month=month + 1, day=day)
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}[unit]
    return wall + timedelta(seconds=quantity * seconds)


def _utc(wall: datetime, zone: tzinfo) -> datetime:
    return wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> tzinfo:
    offset = _OFFSET.fullmatch(name)
    if offset is not None:
        delta = timedelta(hours=int(offset["hours"]), minutes=int(offset["minutes"]))
        return timezone(-delta if offset["sign"] == "-" else delta)
    key = name.replace(" ", "_")
    try:
        return zoneinfo.ZoneInfo(key)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        pass
    # Zuora also accepts the city alone, with spaces: "Los Angeles".
    for candidate in sorted(zoneinfo.available_timezones()):
        if candidate.rsplit("/", 1)[-1].lower() == key.lower():
            return zoneinfo.ZoneInfo(candidate)
    raise ValueError(f"unknown time zone {name!r}")
