"""
Half-open export windows on a cursor column, in whole UTC seconds.

A window ``[start, end)`` holds the records whose cursor (``UpdatedDate``) is at or after
``start`` and before ``end``. Zuora keeps date-times to the second and compares them so: every
bound here is a whole second in UTC, so adjacent windows share one bound and tile the time line
with no gap and no overlap whatever Zuora truncates, and an explicit ``+00:00`` offset leaves
nothing to the tenant's time zone (which would shift or repeat an hour around a DST change).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError
from airflow_provider_zuora_aqua.jobs.limits import ZuoraLimit

UTC = timezone.utc
ONE_SECOND = timedelta(seconds=1)
#: The shortest ``max_window``: shorter windows only multiply jobs (a window over one of Zuora's
#: limits is halved down to one second whatever ``max_window`` is).
MIN_MAX_WINDOW = timedelta(minutes=1)
#: The most windows one run may plan, all queries together: one AQuA job each, and a job costs
#: about five API calls (submit, polls, download), so 10,000 windows are about 50,000 calls, a
#: Zuora developer sandbox's daily allowance, and at 50 jobs at a time (the tenant's limit) 200
#: rounds of jobs. 26 years from 2000-01-01 in 30-day windows (the default) are about 320.
MAX_PLANNED_WINDOWS = 10_000
#: The earliest ``start``: Zuora's own example of an initial high-water mark, "a date earlier than
#: you started using Zuora ... such as 2000-01-01", in "High Water Mark Approach for AQuA Stateless Queries":
#: https://docs.zuora.com/en/zuora-platform/data/aggregate-query-api-aqua/bulk-data-extraction-from-zuora-using-aqua/high-water-mark-approach-for-aqua-stateless-queries
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)
#: A window folder's name: ``<start>_<end>``, each ``YYYYMMDDThhmmssZ`` with a four-digit year.
_SLUG = re.compile(r"(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)")
_SLUG_FORMAT = "%Y%m%dT%H%M%SZ"


def whole_second(value: datetime | str, *, field: str) -> datetime:
    """
    ``value`` (a datetime, or an ISO 8601 string) in UTC, truncated to the second.

    :param field: the argument's name, for the error.
    :raises AquaConfigurationError: not a date-time, or one without a time zone.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            # Python 3.10 reads no "Z".
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
        except ValueError:
            raise AquaConfigurationError(
                f"{field}={text!r} is not an ISO 8601 date-time; write it like '2024-01-01T00:00:00Z'"
            ) from None
    if not isinstance(value, datetime):
        raise AquaConfigurationError(f"{field} must be a datetime or an ISO 8601 string, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise AquaConfigurationError(
            f"{field}={value.isoformat()!r} has no time zone: Zuora would read it in the tenant's zone; "
            "give one, e.g. '2024-01-01T00:00:00Z' or datetime(..., tzinfo=timezone.utc)"
        )
    return value.astimezone(UTC).replace(microsecond=0)


def validate_start(value: datetime | str) -> datetime:
    """
    The export's ``start``: a time-zone-aware date-time in whole UTC seconds, not before 2000-01-01.

    2000-01-01 is Zuora's own initial high-water mark for a first export (see
    :data:`EARLIEST_START`); an earlier start only plans jobs over years before any tenant's data
    (a start in year 1 plans tens of thousands of them).

    :raises AquaConfigurationError: not a date-time with a time zone, or before 2000-01-01T00:00:00Z.
    """
    start = whole_second(value, field="start")
    if start < EARLIEST_START:
        raise AquaConfigurationError(
            f"start={iso(start)!r} is before 2000-01-01, Zuora's own initial high-water mark for a first "
            "export: write start='2000-01-01T00:00:00Z', or a later date before your tenant's first record"
        )
    return start


def duration(value: timedelta | float | int, *, field: str, minimum: timedelta = timedelta(0)) -> timedelta:
    """
    ``value`` (a timedelta, or seconds) as whole seconds of at least ``minimum``.

    :raises AquaConfigurationError: not a duration, not finite, or below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise AquaConfigurationError(f"{field} must be a timedelta or a number of seconds, not {value!r}")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds) or seconds < minimum.total_seconds():
        raise AquaConfigurationError(f"{field}={value!r} must be at least {minimum.total_seconds():g} seconds")
    return timedelta(seconds=int(seconds))


def validate_max_window(value: timedelta | float | int) -> timedelta:
    """
    The longest window (a timedelta, or seconds) in whole seconds, at least :data:`MIN_MAX_WINDOW`.

    :raises AquaConfigurationError: not a duration, or under one minute.
    """
    longest = duration(value, field="max_window")
    if longest < MIN_MAX_WINDOW:
        raise AquaConfigurationError(
            f"max_window={value!r} is under one minute: one AQuA job per window would make runs of many "
            "thousands of jobs; give at least 60 seconds, e.g. max_window=timedelta(days=1)"
        )
    return longest


def iso(instant: datetime) -> str:
    """The ISO 8601 form with an explicit offset that manifests and ZOQL literals use: ``2024-01-01T00:00:00+00:00``."""
    return instant.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, order=True)
class Window:
    """The records whose cursor is in ``[start, end)``; both bounds whole UTC seconds."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for bound in (self.start, self.end):
            if bound.utcoffset() != timedelta(0) or bound.microsecond:
                raise ValueError(f"window bounds must be whole UTC seconds, not {bound!r}")
        if self.start >= self.end:
            raise ValueError(f"a window ends after it starts: [{iso(self.start)}, {iso(self.end)})")

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def splittable(self) -> bool:
        """Whether :meth:`bisect` can halve it: two seconds or more."""
        return self.length >= 2 * ONE_SECOND

    def bisect(self) -> tuple[Window, Window]:
        """The two halves, split on a whole second.

        :raises AquaIntegrityError: a one-second window cannot be split.
        """
        if not self.splittable:
            raise AquaIntegrityError(
                f"window [{iso(self.start)}, {iso(self.end)}) is one second long and cannot be split further"
            )
        middle = self.start + timedelta(seconds=int(self.length.total_seconds()) // 2)
        return Window(self.start, middle), Window(middle, self.end)

    def to_json(self, cursor: str) -> dict[str, str]:
        """The manifest's ``window``."""
        return {"cursor": cursor, "start": iso(self.start), "end": iso(self.end)}

    @classmethod
    def from_json(cls, data: object) -> Window:
        """A manifest's ``window``; :class:`ValueError` for any other shape."""
        if not isinstance(data, dict) or not isinstance(data.get("start"), str) or not isinstance(data.get("end"), str):
            raise ValueError(f"a window is {{'cursor', 'start', 'end'}}, not {str(data)[:200]!r}")
        try:
            start, end = (whole_second(data[key], field=f"window.{key}") for key in ("start", "end"))
        except AquaConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return cls(start, end)

    @property
    def slug(self) -> str:
        """
        A folder name that sorts in time order: ``20240101T000000Z_20240102T000000Z``.

        Read back by :meth:`from_slug`. The year is written with four digits by hand: ``%Y``
        leaves years before 1000 unpadded on Linux, and such a folder would not read back.
        """
        return f"{_slug_bound(self.start)}_{_slug_bound(self.end)}"

    @classmethod
    def from_slug(cls, slug: str) -> Window:
        """The window a folder named by :attr:`slug` holds; :class:`ValueError` for any other name."""
        match = _SLUG.fullmatch(slug)
        if match is None:
            raise ValueError(f"{slug!r} is not a window folder such as '20240101T000000Z_20240102T000000Z'")
        start, end = (datetime.strptime(bound, _SLUG_FORMAT).replace(tzinfo=UTC) for bound in match.groups())
        return cls(start, end)


def _slug_bound(instant: datetime) -> str:
    # _SLUG_FORMAT by hand: strftime's %Y is not zero-padded before year 1000 (strptime's reads 4 digits).
    return f"{instant.year:04d}{instant:%m%dT%H%M%S}Z"


def split_window(window: Window, limit: ZuoraLimit, *, query: str) -> tuple[Window, Window]:
    """
    The halves of ``query``'s ``window``, whose job hit ``limit``.

    :raises AquaConfigurationError: a one-second window: halving cannot help any more, the query
        itself must ask for less.
    """
    if not window.splittable:
        raise AquaConfigurationError(
            f"queries[{query!r}]: window [{iso(window.start)}, {iso(window.end)}) is one second long, yet "
            f"{limit.description}: it cannot be split further. Make one second of it smaller: select "
            "fewer columns (fields of joined objects especially), or narrow its 'where' (or split it into two "
            "queries with complementary conditions)"
        )
    return window.bisect()


def cut(start: datetime, end: datetime, longest: timedelta) -> list[Window]:
    """``[start, end)`` in consecutive windows of at most ``longest`` (the last may be shorter)."""
    windows = []
    while start < end:
        windows.append(Window(start, min(end, start + longest)))
        start = windows[-1].end
    return windows


def plan_windows(
    published: Iterable[Window],
    start: datetime,
    end: datetime,
    longest: timedelta,
    *,
    max_windows: int = MAX_PLANNED_WINDOWS,
) -> list[Window]:
    """
    The windows still to export so that ``[start, end)`` is covered exactly once: the gaps the
    ``published`` windows leave, each cut to at most ``longest``.

    A window published by a run that died before it could say so is not exported again; the gap
    before it (a window of that run that never finished) is.

    :raises AquaIntegrityError: two published windows overlap (their records would be doubled).
    :raises AquaConfigurationError: the plan holds more than ``max_windows`` windows (counted
        before any is made).
    """
    return plan_exports({"": published}, start, end, longest, max_windows=max_windows)[""]


def plan_exports(
    taken: Mapping[str, Iterable[Window]],
    start: datetime,
    end: datetime,
    longest: timedelta,
    *,
    max_windows: int = MAX_PLANNED_WINDOWS,
) -> dict[str, list[Window]]:
    """
    :func:`plan_windows` for every query at once (query name -> its published or in-flight
    windows), bounded together: all queries' windows are counted arithmetically first, and a
    plan of more than ``max_windows`` is refused before a single window is made.
    """
    gaps = {query: _gaps(windows, start, end) for query, windows in taken.items()}
    count = sum(_ceil_div(gap_end - gap_start, longest) for spans in gaps.values() for gap_start, gap_end in spans)
    if count > max_windows:
        span = sum((gap_end - gap_start for spans in gaps.values() for gap_start, gap_end in spans), timedelta(0))
        raise AquaConfigurationError(
            f"the export from start={iso(start)!r} to {iso(end)} would plan {count:,} windows of at most "
            f"max_window={longest}, over the {max_windows:,} one run may plan (one AQuA job each): give a later "
            f"start, or a larger max_window (e.g. max_window={_suggest(span / max_windows)})"
        )
    return {query: [window for span in spans for window in cut(*span, longest)] for query, spans in gaps.items()}


def _gaps(published: Iterable[Window], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The spans of ``[start, end)`` no published window covers, oldest first."""
    ordered = sorted(published)
    for before, after in zip(ordered, ordered[1:]):
        if after.start < before.end:
            raise AquaIntegrityError(
                f"published windows [{iso(before.start)}, {iso(before.end)}) and "
                f"[{iso(after.start)}, {iso(after.end)}) overlap: a consumer would read their common records twice"
            )
    gaps = []
    position = start
    for window in ordered:
        if position >= end:
            break
        if window.end <= position:
            continue
        if window.start > position:
            gaps.append((position, min(window.start, end)))
        position = window.end
    if position < end:
        gaps.append((position, end))
    return gaps


def _ceil_div(span: timedelta, longest: timedelta) -> int:
    return -(-span // longest)


def _suggest(span: timedelta) -> str:
    """``span`` rounded up to whole hours, or whole days from a day on, as Python to copy."""
    if span > timedelta(hours=23):
        return f"timedelta(days={_ceil_div(span, timedelta(days=1))})"
    return f"timedelta(hours={max(_ceil_div(span, timedelta(hours=1)), 1)})"


def contiguous_end(published: Iterable[Window], start: datetime) -> datetime:
    """The watermark: the end of the run of published windows that tile ``[start, mark)`` with no gap."""
    mark = start
    for window in sorted(published):
        if window.start <= mark < window.end:
            mark = window.end
        elif window.start > mark:
            break
    return mark
