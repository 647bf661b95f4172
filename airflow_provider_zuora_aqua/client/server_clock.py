"""
Zuora's clock, as the ``Date`` header of its answers shows it.

Windows of an incremental export end at "now - lag": whose now? A worker whose clock runs ahead
of Zuora's would close windows on records Zuora has not stamped yet. Every answer's ``Date``
(whole seconds, RFC 9110) is read here, and the latest offset between it and this process's
clock is kept per tenant (base URL); forked children inherit it, and it stays valid as long as
the two clocks do not drift apart. A ``Date`` that cannot be read, or that is more than a day
off this process's clock (a hostile or broken answer), is not believed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

#: A header longer than an RFC 9110 date by far is not one.
_MAX_DATE_CHARS = 64
#: An offset beyond this is no clock skew but a broken or hostile answer.
MAX_BELIEVED_OFFSET = timedelta(days=1)

#: base URL -> Zuora's clock minus this process's, in seconds, as the latest answer showed it.
_offsets: dict[str, float] = {}


def observe(base_url: str, headers: Mapping[str, str], *, received: float | None = None) -> None:
    """Keep the offset an answer's ``Date`` shows (``received``: this process's epoch seconds at receipt)."""
    zuora = parse_date(headers.get("Date"))
    if zuora is None:
        return
    offset = zuora.timestamp() - (time.time() if received is None else received)
    if abs(offset) <= MAX_BELIEVED_OFFSET.total_seconds():
        _offsets[base_url] = offset


def zuora_now(base_url: str) -> datetime | None:
    """Zuora's time now, from the latest answer's ``Date`` (None when no answer carried a usable one)."""
    offset = _offsets.get(base_url)
    if offset is None:
        return None
    return datetime.now(timezone.utc) + timedelta(seconds=offset)


def parse_date(value: object) -> datetime | None:
    """An HTTP date as an aware UTC datetime; None for anything else."""
    if not isinstance(value, str) or not value or len(value) > _MAX_DATE_CHARS:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(timezone.utc)


def forget() -> None:
    """Drop every observation (tests)."""
    _offsets.clear()
