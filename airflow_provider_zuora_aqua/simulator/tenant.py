"""A tenant with data: named tables of rows that change over time, and the clock they change by.

Tests write to it between and during exports (``sim.tenant.insert("Account", {...})``); a query
on an object that has a table returns exactly the rows visible to it (see :meth:`Tenant.export`).
Objects without a table keep the deterministic generated rows of :mod:`.results`.

Rows
    Every row has ``Id`` (a string; generated when not given), ``CreatedDate`` and
    ``UpdatedDate`` (UTC date-times at whole seconds) and any other fields (str, int, float,
    bool, None, date, or timezone-aware datetime). An insert or update stamps ``UpdatedDate``
    (an insert ``CreatedDate`` too) with the tenant clock unless the write gives it (a
    timezone-aware datetime, or an ISO 8601 string with an offset; naive values are refused as
    ambiguous). ``update(..., stamp=False)`` changes fields without touching ``UpdatedDate``
    (some Zuora fields do that).

Deletes
    A delete keeps the row as deleted for 30 days (Zuora's retention of deleted data), with
    ``UpdatedDate`` stamped at the delete. Queries leave deleted rows out unless the submit asks
    for them (``deleted: {column, format}``); then they come with the live rows that match,
    and every row has the deleted column, first, named ``<Object>.<column>``: ``1``/``0``
    (``Numeric``) or ``true``/``false`` (``Boolean``).

The export index is eventually consistent
    Each write has an ``index_delay`` (seconds, default the tenant's ``index_delay``): queries see
    it only once the tenant clock has passed ``written + index_delay``, and until then see the
    row as it was before (or not at all, for an insert). The row keeps the ``UpdatedDate`` of the
    write, which is then in the past: a row that "arrives late" in a window already exported.
    A **late commit** (``late_by`` seconds) goes further: the write is stamped ``late_by``
    seconds before now, as a long transaction that started then and commits now (Zuora: "it
    might take a long time for some transactions to be completed"), and becomes visible
    ``index_delay`` seconds from now.

The clock
    :class:`TenantClock` follows the real UTC time by default, optionally skewed by some
    seconds (a tenant whose clock is not the client's); tests may set it (frozen, or running
    from a given instant) and advance it. Stamps, index visibility, job times and the HTTP
    ``Date`` header all read it.

A job reads one snapshot, taken at submit (AQuA runs a job's queries in one read-only
transaction): writes after the submit are not in its files.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from .where import FieldGetter, compile_condition
from .zoql import ParsedQuery, parse_datetime_literal, referenced_objects

DEFAULT_TIME_ZONE = "America/Los_Angeles"
#: Zuora keeps deleted records 30 days; AQuA exports them only within that time.
DELETED_RETENTION = timedelta(days=30)
STAMPED = ("CreatedDate", "UpdatedDate")
_UTC = timezone.utc


def whole_second(moment: datetime) -> datetime:
    """``moment`` in UTC, truncated to the whole second (Zuora's precision)."""
    return moment.astimezone(_UTC).replace(microsecond=0)


def iso_utc(moment: datetime) -> str:
    """``2024-01-01T00:00:00Z``: how the Python and control APIs show date-times."""
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_instant(value: object, what: str) -> datetime:
    if isinstance(value, str):
        parsed = parse_datetime_literal(value, _UTC) if _has_offset(value) else None
        if parsed is None:
            raise ValueError(f"{what} must be an ISO 8601 date-time with an offset, not {value!r}")
        return parsed
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{what} must be timezone-aware, not the naive {value!r}")
        return whole_second(value)
    raise ValueError(f"{what} must be a datetime or an ISO 8601 string, not {value!r}")


def _has_offset(text: str) -> bool:
    tail = text.strip()[10:]
    return tail.endswith(("Z", "z")) or "+" in tail or "-" in tail


class TenantClock:
    """The tenant's "now": the real UTC time (plus a skew) unless a test set it.

    Zuora's servers keep their own time; a client that takes "now" from its own clock is off by
    their difference. :meth:`skew` reproduces that: the clock follows the real time shifted by a
    number of seconds, and everything that reads it (stamps, index visibility, job times, the
    HTTP ``Date`` header) shifts with it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base: datetime | None = None
        self._base_real = 0.0
        self._running = True
        self._skew = 0.0

    def now(self) -> datetime:
        """The current tenant time (UTC, with microseconds)."""
        with self._lock:
            if self._base is None:
                return datetime.now(_UTC) + timedelta(seconds=self._skew)
            if not self._running:
                return self._base
            return self._base + timedelta(seconds=time.time() - self._base_real)

    def set(self, when: datetime | str, running: bool = False) -> datetime:
        """Set the time to ``when``: frozen there, or (``running``) running on from it."""
        instant = _as_instant(when, "the clock time") if isinstance(when, str) else when
        if instant.tzinfo is None:
            raise ValueError("the clock time must be timezone-aware")
        with self._lock:
            self._base, self._base_real, self._running = instant.astimezone(_UTC), time.time(), running
        return self.now()

    def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` forward (a real-time clock becomes set, still running)."""
        with self._lock:
            if self._base is None:
                real = datetime.now(_UTC) + timedelta(seconds=self._skew)
                self._base, self._base_real, self._running = real, time.time(), True
            self._base += timedelta(seconds=seconds)
        return self.now()

    def skew(self, seconds: float) -> datetime:
        """Follow the real clock ``seconds`` ahead (negative: behind), e.g. ``-900`` for 15 minutes slow."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
            raise ValueError(f"the clock skew is a number of seconds, not {seconds!r}")
        with self._lock:
            self._base, self._running, self._skew = None, True, float(seconds)
        return self.now()

    def reset(self) -> datetime:
        """Follow the real clock again, without skew."""
        return self.skew(0)

    @property
    def skew_seconds(self) -> float | None:
        """The skew from the real clock, None while the clock is set (frozen or running from a set time)."""
        with self._lock:
            return self._skew if self._base is None else None

    @property
    def frozen(self) -> bool:
        """Whether the clock stands still."""
        with self._lock:
            return self._base is not None and not self._running


@dataclass(frozen=True)
class _Version:
    """One write of a row: its fields after the write, and when queries start to see it."""

    sequence: int
    fields: dict[str, Any]
    deleted: bool
    written_at: datetime
    visible_at: datetime


@dataclass(frozen=True)
class TableExport:
    """What one query on a table exports: header cells before the fields' and the rendered rows."""

    leading_header: tuple[str, ...]
    rows: tuple[tuple[str | None, ...], ...]


@dataclass(frozen=True)
class DeletedExport:
    """The submit's ``deleted`` settings: the column's name and ``numeric`` or ``boolean``.

    ``include`` False keeps the column but leaves deleted rows out (a stateful full load).
    """

    column: str
    format: str
    include: bool = True


class Tenant:
    """Tables of rows behind one lock; see the module docstring for the model.

    :param time_zone: the tenant's time zone (IANA name): ZOQL date-time literals without an
        offset are read in it, and date-times render in it unless a job asks for ``dateTimeUtc``.
    :param index_delay: the default ``index_delay`` of a write, in seconds.
    """

    def __init__(self, time_zone: str = DEFAULT_TIME_ZONE, index_delay: float = 0.0) -> None:
        self.zone = ZoneInfo(time_zone)
        self.clock = TenantClock()
        self.index_delay = index_delay
        self._lock = threading.RLock()
        # Table key (lower-case name) -> (name as first written, Id -> versions in write order).
        self._tables: dict[str, tuple[str, dict[str, list[_Version]]]] = {}
        self._sequence = 0
        # Objects the API user may not read (lower-case name -> name as given).
        self._denied: dict[str, str] = {}

    # Writes

    def create_table(self, table: str) -> None:
        """Create an empty table (a query on it returns no rows instead of generated ones)."""
        with self._lock:
            self._table(table, create=True)

    def insert(
        self, table: str, row: Mapping[str, Any], index_delay: float | None = None, late_by: float = 0
    ) -> dict[str, Any]:
        """Insert a row; return it as stored. ValueError if its ``Id`` exists."""
        return self.insert_many(table, [row], index_delay, late_by)[0]

    def insert_many(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        index_delay: float | None = None,
        late_by: float = 0,
    ) -> list[dict[str, Any]]:
        """Insert several rows at once (one clock reading); return them as stored.

        ``late_by`` (seconds) makes them a late commit: stamped that long ago, visible only
        from now (plus ``index_delay``).
        """
        with self._lock:
            versions = self._table(table, create=True)
            now = self.clock.now()
            stamp = whole_second(now - _late(late_by))
            stored = []
            for row in rows:
                fields = self._normalise(row)
                row_id = fields.setdefault("Id", secrets.token_hex(16))
                if not isinstance(row_id, str) or not row_id:
                    raise ValueError(f"Id must be a non-empty string, not {row_id!r}")
                if row_id in versions:
                    raise ValueError(f"{table} already has a row with Id {row_id!r}")
                for name in STAMPED:
                    fields.setdefault(name, stamp)
                versions[row_id] = [self._version(fields, False, now, index_delay)]
                stored.append(dict(fields))
            return stored

    def update(
        self,
        table: str,
        row_id: str,
        changes: Mapping[str, Any],
        index_delay: float | None = None,
        stamp: bool = True,
        late_by: float = 0,
    ) -> dict[str, Any]:
        """Change fields of a live row (``UpdatedDate`` stamped unless given or ``stamp=False``).

        ``late_by`` stamps it that many seconds ago (a late commit). KeyError if the row does not
        exist or is deleted. Return the row as stored.
        """
        with self._lock:
            history = self._live_history(table, row_id)
            now = self.clock.now()
            fields = {**history[-1].fields, **self._normalise(changes)}
            fields["Id"] = row_id
            if stamp and "UpdatedDate" not in changes:
                fields["UpdatedDate"] = whole_second(now - _late(late_by))
            history.append(self._version(fields, False, now, index_delay))
            return dict(fields)

    def delete(self, table: str, row_id: str, index_delay: float | None = None, late_by: float = 0) -> dict[str, Any]:
        """Delete a live row (kept 30 days as deleted); return its last fields. KeyError if none.

        ``late_by`` stamps the deletion that many seconds ago (a late commit).
        """
        with self._lock:
            history = self._live_history(table, row_id)
            now = self.clock.now()
            fields = {**history[-1].fields, "UpdatedDate": whole_second(now - _late(late_by))}
            history.append(self._version(fields, True, now, index_delay))
            return dict(fields)

    # The API user's permissions

    def deny(self, *objects: str) -> None:
        """Take away the API user's permission to read ``objects``: AQuA then drops their queries."""
        with self._lock:
            for name in objects:
                if not isinstance(name, str) or not name.isidentifier():
                    raise ValueError(f"an object name is an identifier such as 'Invoice', not {name!r}")
                self._denied[name.lower()] = name

    def allow(self, *objects: str) -> None:
        """Give back the permission to read ``objects`` (none named: every object)."""
        with self._lock:
            if not objects:
                self._denied.clear()
            for name in objects:
                self._denied.pop(str(name).lower(), None)

    @property
    def denied_objects(self) -> list[str]:
        """The objects the API user may not read, sorted."""
        with self._lock:
            return sorted(self._denied.values())

    def may_read(self, parsed: ParsedQuery) -> bool:
        """Whether the API user may read every object the query touches (its own, and joined ones)."""
        with self._lock:
            return not any(name.lower() in self._denied for name in referenced_objects(parsed))

    # Reads

    def tables(self) -> dict[str, int]:
        """Every table's name and its number of live rows (visible or not)."""
        with self._lock:
            return {name: len(self._current(versions, None, False)) for name, versions in self._tables.values()}

    def has_table(self, table: str) -> bool:
        """Whether ``table`` exists (names are case-insensitive, as ZOQL's)."""
        with self._lock:
            return table.lower() in self._tables

    def rows(self, table: str, deleted: bool = False, visible: bool = False) -> list[dict[str, Any]]:
        """The table's current rows, by ``Id``: the truth an export should add up to.

        ``deleted`` adds the rows deleted in the last 30 days, and an ``IsDeleted`` field to
        every row; ``visible`` keeps only what a query would see now (the export index).
        KeyError if there is no such table.
        """
        with self._lock:
            versions = self._table(table, create=False)
            now = self.clock.now()
            current = self._current(versions, now if visible else None, deleted)
            rows = []
            for version in current:
                row = dict(version.fields)
                if deleted:
                    row["IsDeleted"] = version.deleted
                rows.append(row)
            return rows

    def export(
        self,
        parsed: ParsedQuery,
        date_time_utc: bool,
        deleted: DeletedExport | None = None,
        since: datetime | None = None,
        export_zoql: bool = True,
    ) -> TableExport | None:
        """The rows a query on a table exports now; None if its object has no table.

        Rows are the latest visible version of each ``Id`` (deleted ones only with ``deleted``,
        within 30 days) that match the ``where`` condition (and, for a stateful increment, whose
        ``UpdatedDate`` is at or after ``since``), ordered by ``Id``. Cells are rendered for the
        file: None for null. Raises :class:`.where.ZoqlValueError` for a literal that cannot be
        compared with its field. ``export_zoql`` (a ``zoqlexport`` query) reads relative date
        expressions (``'today - 1 day'``), which standard ZOQL lacks.
        """
        predicate = compile_condition(parsed.condition, self.zone, self.clock.now() if export_zoql else None)
        with self._lock:
            key = parsed.object_name.lower()
            if key not in self._tables:
                return None
            name, versions = self._tables[key]
            now = self.clock.now()
            selected = []
            for version in self._current(versions, now, deleted is not None and deleted.include):
                get = _getter(version.fields, name)
                if since is not None and version.fields["UpdatedDate"] < since:
                    continue
                if predicate(get):
                    selected.append((version, get))
        # Zuora writes the deleted column first, named after the object: "Account.IsDeleted".
        leading = () if deleted is None else (f"{name}.{deleted.column}",)
        rows = []
        for version, get in selected:
            cells = [self.render(get(field), date_time_utc) for field in parsed.fields]
            if deleted is not None:
                cells.insert(0, _deleted_cell(version.deleted, deleted.format))
            rows.append(tuple(cells))
        return TableExport(leading, tuple(rows))

    def render(self, value: object, date_time_utc: bool) -> str | None:
        """A value as a CSV cell: date-times in the tenant's zone (``-08:00``), or UTC (``+0000``)."""
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, datetime):
            if date_time_utc:
                return value.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
            return value.astimezone(self.zone).isoformat(timespec="seconds")
        if isinstance(value, date):
            return value.isoformat()
        return str(value)

    # Internals (the lock is held)

    def _table(self, table: str, create: bool) -> dict[str, list[_Version]]:
        if not isinstance(table, str) or not table.isidentifier():
            raise ValueError(f"a table name is an identifier such as 'Account', not {table!r}")
        entry = self._tables.get(table.lower())
        if entry is None:
            if not create:
                raise KeyError(table)
            entry = self._tables[table.lower()] = (table, {})
        return entry[1]

    def _live_history(self, table: str, row_id: str) -> list[_Version]:
        history = self._table(table, create=False).get(row_id)
        if history is None or history[-1].deleted:
            raise KeyError(f"{table} has no live row with Id {row_id!r}")
        return history

    def _version(self, fields: dict[str, Any], deleted: bool, now: datetime, delay: float | None) -> _Version:
        self._sequence += 1
        delay = self.index_delay if delay is None else delay
        if delay < 0:
            raise ValueError("index_delay must not be negative")
        return _Version(self._sequence, fields, deleted, now, now + timedelta(seconds=delay))

    def _normalise(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(row, Mapping):
            raise ValueError(f"a row is a mapping of field names to values, not {row!r}")
        fields: dict[str, Any] = {}
        for name, value in row.items():
            if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"a field name is an identifier such as 'Name', not {name!r}")
            if name in STAMPED or isinstance(value, datetime):
                value = _as_instant(value, name)
            elif value is not None and not isinstance(value, (str, int, float, bool, date)):
                raise ValueError(f"{name}: unsupported value {value!r}")
            fields[name] = value
        return fields

    def _current(
        self, versions: dict[str, list[_Version]], visible_at: datetime | None, with_deleted: bool
    ) -> list[_Version]:
        """The latest version of each row (seen at ``visible_at``; None: every write)."""
        current = []
        for row_id in sorted(versions):
            seen = [v for v in versions[row_id] if visible_at is None or v.visible_at <= visible_at]
            if not seen:
                continue
            version = seen[-1]
            if version.deleted:
                reference = visible_at or self.clock.now()
                if not with_deleted or reference - version.written_at > DELETED_RETENTION:
                    continue
            current.append(version)
        return current


def _late(late_by: float) -> timedelta:
    """How far in the past a late commit is stamped; ValueError unless a non-negative number."""
    if isinstance(late_by, bool) or not isinstance(late_by, (int, float)) or not late_by >= 0:
        raise ValueError(f"late_by must be a non-negative number of seconds, not {late_by!r}")
    return timedelta(seconds=late_by)


def _getter(fields: dict[str, Any], table: str) -> FieldGetter:
    lowered = {name.lower(): value for name, value in fields.items()}
    prefix = f"{table.lower()}."

    def get(field: str) -> object:
        key = field.lower()
        if key not in lowered and key.startswith(prefix):
            key = key[len(prefix) :]
        return lowered.get(key)

    return get


def _deleted_cell(deleted: bool, deleted_format: str) -> str:
    if deleted_format.lower() == "numeric":
        return "1" if deleted else "0"
    return "true" if deleted else "false"


def row_to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON values: date-times as ``2024-01-01T00:00:00Z``, dates as ``2024-01-31``."""
    return {
        name: iso_utc(value) if isinstance(value, datetime) else value.isoformat() if isinstance(value, date) else value
        for name, value in row.items()
    }
