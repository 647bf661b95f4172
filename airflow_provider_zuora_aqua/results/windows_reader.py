"""
Read the windows an incremental export published, and merge them into a SQL table exactly once.

A window is announced by an asset event whose extra is the window's entry of the export's return
value (``query``, ``window``, ``manifest``, ``records``, ``job_id``; see
:func:`~airflow_provider_zuora_aqua.results.lineage.record_window_events`). A consumer:

1. gathers the windows announced (:func:`announced_windows`, or :func:`windows_in_events`);
2. reads each window's manifest (:func:`read_window`: its bytes' SHA-256 names this version of
   the window) and its files (:func:`iter_records`: each file's SHA-256 and record count checked);
3. merges the records into a table (:class:`MergeTable`), one transaction per window.

The merge rule makes the order of windows, and loading a window twice, irrelevant: a record
replaces the row of its ``Id`` only when its ``UpdatedDate`` is not older than the row's
(``INSERT ... ON CONFLICT (Id) DO UPDATE ... WHERE excluded.UpdatedDate >= table.UpdatedDate``,
SQLite 3.24+ and PostgreSQL 9.5+). A deleted record (``IsDeleted`` true, exported with
``deleted=True``) is merged the same way and stays as a tombstone (``IsDeleted = 1``), so that an
older version loaded later cannot bring the row back: live rows are those with ``IsDeleted = 0``.
Each loaded manifest (URI and SHA-256) is recorded in the ledger table ``_loaded_windows`` in the
window's own transaction: a window already there is skipped, and a load killed before its commit
left nothing behind.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError
from airflow_provider_zuora_aqua.results.delivery import MANIFEST_NAME, MAX_MANIFEST_BYTES, manifest_json
from airflow_provider_zuora_aqua.results.lineage import WINDOW_EVENT_KEYS

LEDGER_TABLE = "_loaded_windows"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?")
_TRUE = {"true", "1"}
_FALSE = {"false", "0", ""}
_CHUNK = 1024 * 1024


# -- which windows -------------------------------------------------------------------------------


def _extra(event: object) -> Mapping[str, Any]:
    extra = event.get("extra") if isinstance(event, Mapping) else getattr(event, "extra", None)
    return extra if isinstance(extra, Mapping) else {}


def windows_in_events(*event_lists: Iterable[object], query: str | None = None) -> list[dict[str, Any]]:
    """
    The windows that asset events announce, each once (by manifest URI), oldest first.

    Reads both shapes: one event per window (its extra is the window) and the export's one
    event per run (``{"windows": [...], "records": total}``). Events without windows are ignored.

    :param event_lists: asset events (``triggering_asset_events[asset]``, ``inlet_events[asset]``)
        or their extras' holders (mappings with ``extra``).
    :param query: keep only this query's windows.
    """
    found: dict[str, dict[str, Any]] = {}
    for events in event_lists:
        for event in events or ():
            extra = _extra(event)
            listed = extra.get("windows")
            candidates: list[Any] = listed if isinstance(listed, list) else [extra]
            for window in candidates:
                if not isinstance(window, Mapping) or not isinstance(window.get("manifest"), str):
                    continue
                if query is None or window.get("query") == query:
                    found.setdefault(window["manifest"], {key: window.get(key) for key in WINDOW_EVENT_KEYS})
    return sorted(found.values(), key=lambda w: (str((w.get("window") or {}).get("start")), str(w.get("query"))))


def announced_windows(
    asset: object, triggering_asset_events: Mapping[Any, Any], inlet_events: Mapping[Any, Any] | None = None
) -> list[dict[str, Any]]:
    """
    The windows a consumer run should load: those its triggering events announce, and those
    announced on ``asset`` since the earliest of them (read through ``inlet_events``; the task
    needs ``inlets=[asset]``). Airflow gives a run only the events registered before the first one
    that queued it; the other windows of the same export run would wait for the consumer's next
    run. Loading a window twice changes nothing (:class:`MergeTable`), so reading more is safe.
    """
    triggered = list(triggering_asset_events.get(asset) or ()) if triggering_asset_events else []
    later: Iterable[object] = ()
    stamps = [event.timestamp for event in triggered if getattr(event, "timestamp", None) is not None]
    if inlet_events is not None and stamps:
        later = inlet_events[asset].after(min(stamps))
    return windows_in_events(triggered, later)


# -- reading a window ----------------------------------------------------------------------------


def open_uri(uri: str, conn_id: str | None = None) -> IO[bytes]:
    """Open a file the export wrote (``file://``, or object storage through ``ObjectStoragePath``) to read bytes."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path) if parts.scheme else uri).open("rb")
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(uri, conn_id=conn_id).open("rb")


@dataclass(frozen=True)
class PublishedWindow:
    """One window's manifest as read now: its URI, its bytes' SHA-256 and what it lists."""

    manifest_uri: str
    sha256: str
    query: str
    window: Mapping[str, Any]
    files: Sequence[Mapping[str, Any]]
    job_id: object = None

    @property
    def records(self) -> int:
        return sum(int(entry.get("records") or 0) for entry in self.files)


def read_window(manifest_uri: str, conn_id: str | None = None) -> PublishedWindow:
    """
    Read a window's ``_manifest.json``.

    :raises AquaIntegrityError: it is not a manifest of a published window (no query, window or
        file list).
    """
    with open_uri(manifest_uri, conn_id) as handle:
        raw = handle.read(MAX_MANIFEST_BYTES + 1)
    data = manifest_json(raw, manifest_uri)
    window = data.get("window")
    files = data.get("files")
    if not isinstance(window, dict) or not isinstance(files, list) or not isinstance(data.get("query"), str):
        raise AquaIntegrityError(f"{manifest_uri} names no query, window and files: not a window's manifest")
    return PublishedWindow(
        manifest_uri, hashlib.sha256(raw).hexdigest(), data["query"], window, files, data.get("job_id")
    )


class _Hashing(io.RawIOBase):
    """Reads a binary stream through, hashing every byte read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self.digest.update(data)
        self.size += len(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def iter_records(window: PublishedWindow, conn_id: str | None = None) -> Iterator[dict[str, str | None]]:
    """
    Every record of every file of the window, as ``{column: text or None}`` (an empty cell is
    None). Each file's SHA-256 and record count are checked when its last record has been read:
    a caller that writes the records in one transaction commits only after the last check.

    :raises AquaIntegrityError: a file differs from what the manifest says.
    """
    for entry in window.files:
        uri = str(entry["uri"])
        with open_uri(uri, conn_id) as raw:
            hashing = _Hashing(raw)
            count = 0
            for record in _csv_records(hashing, str(entry.get("format") or "csv"), uri):
                count += 1
                yield record
            hashing.drain()
        if entry.get("sha256") and hashing.digest.hexdigest() != entry["sha256"]:
            raise AquaIntegrityError(f"{uri} does not match the SHA-256 its manifest {window.manifest_uri} lists")
        if entry.get("records") is not None and count != int(entry["records"]):
            raise AquaIntegrityError(f"{uri} holds {count} records, its manifest says {entry['records']}")


def _csv_records(stream: _Hashing, file_format: str, uri: str) -> Iterator[dict[str, str | None]]:
    buffered = io.BufferedReader(stream, _CHUNK)
    if file_format == "gzip":
        text_source: Any = gzip.GzipFile(fileobj=buffered)
    elif file_format == "zip":
        spool = io.BytesIO(buffered.read())  # an AQuA zip holds one CSV; zipfile needs to seek
        archive = zipfile.ZipFile(spool)
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) != 1:
            raise AquaIntegrityError(f"{uri} holds {len(members)} files, not one CSV")
        text_source = archive.open(members[0])
    else:
        text_source = buffered
    # newline="": line ends reach csv as they are (a quoted cell may hold one).
    reader = csv.reader(io.TextIOWrapper(text_source, encoding="utf-8-sig", newline=""))
    header = next(reader, None)
    if header is None:
        return
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise AquaIntegrityError(f"{uri}: a record has {len(row)} fields, the header {len(header)}")
        yield {name: value if value != "" else None for name, value in zip(header, row)}


# -- merging into a table --------------------------------------------------------------------------


def utc_text(value: str | None, column: str = "UpdatedDate") -> str:
    """
    A Zuora date-time (``2024-01-31T10:00:00+0000``, ``...-08:00``, ``...Z``) as UTC text that
    sorts as time does: ``2024-01-31T18:00:00Z``.
    """
    match = _DATETIME.fullmatch((value or "").strip())
    if match is None:
        raise AquaIntegrityError(f"{column} {value!r} is not a date-time")
    day, time, offset = match.groups()
    if offset and offset != "Z" and ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    moment = datetime.fromisoformat(f"{day}T{time}{'+00:00' if offset in (None, 'Z') else offset}")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _flag(value: str | None, column: str) -> int:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise AquaIntegrityError(f"{column} {value!r} is neither true nor false")


def _quote(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise AquaConfigurationError(f"{name!r} is not a plain SQL name (letters, digits, '_')")
    return f'"{name}"'


def placeholder_of(conn: object) -> str:
    """The parameter marker of a DB-API connection's driver: ``?`` (sqlite3) or ``%s`` (psycopg2, ...)."""
    module = sys.modules.get(type(conn).__module__.split(".")[0])
    style = getattr(module, "paramstyle", "qmark")
    return "?" if style == "qmark" else "%s"


@dataclass(frozen=True)
class LoadResult:
    """What :meth:`MergeTable.load` did with one window: merged it (``rows``), or found it loaded already."""

    manifest: str
    sha256: str
    loaded: bool
    rows: int = 0


@dataclass(frozen=True)
class MergeTable:
    """
    A SQL table that the windows of one query are merged into (see the module docs).

    :param table: the table's name.
    :param columns: the columns to store, as the query names them; ``key`` and ``version`` among them.
    :param key: the column rows are merged on.
    :param version: the date-time column that orders versions of a row (stored as UTC text).
    :param deleted: the export's deleted column (``deleted=True``: ``IsDeleted``); stored as 0/1.
        A window without it holds live rows only.
    :param ledger: the table that records each loaded manifest (URI and SHA-256), per target table.
    """

    table: str
    columns: Sequence[str]
    key: str = "Id"
    version: str = "UpdatedDate"
    deleted: str = "IsDeleted"
    ledger: str = LEDGER_TABLE
    chunk_size: int = 500
    _stored: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in (self.table, self.ledger, self.key, self.version, self.deleted, *self.columns):
            _quote(name)
        if self.key not in self.columns or self.version not in self.columns:
            raise AquaConfigurationError(f"columns must include the key {self.key!r} and the version {self.version!r}")
        object.__setattr__(self, "_stored", tuple(c for c in self.columns if c != self.deleted) + (self.deleted,))

    def ddl(self) -> list[str]:
        """``CREATE TABLE IF NOT EXISTS`` of the table (text columns) and of the ledger."""
        columns = ", ".join(
            f"{_quote(c)} TEXT PRIMARY KEY"
            if c == self.key
            else f"{_quote(c)} TEXT NOT NULL"
            if c == self.version
            else f"{_quote(c)} INTEGER NOT NULL DEFAULT 0"
            if c == self.deleted
            else f"{_quote(c)} TEXT"
            for c in self._stored
        )
        return [
            f"CREATE TABLE IF NOT EXISTS {_quote(self.table)} ({columns})",
            f"CREATE TABLE IF NOT EXISTS {_quote(self.ledger)} (target TEXT NOT NULL, manifest TEXT NOT NULL, "
            "sha256 TEXT NOT NULL, query TEXT, window_start TEXT, window_end TEXT, records INTEGER, "
            "loaded_at TEXT, PRIMARY KEY (target, manifest, sha256))",
        ]

    def live_rows_sql(self) -> str:
        """A ``SELECT`` of the live rows (tombstones left out)."""
        return f"SELECT * FROM {_quote(self.table)} WHERE {_quote(self.deleted)} = 0"

    def upsert_sql(self, marker: str) -> str:
        table = _quote(self.table)
        names = ", ".join(_quote(c) for c in self._stored)
        updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in self._stored if c != self.key)
        version = _quote(self.version)
        return (
            f"INSERT INTO {table} ({names}) VALUES ({', '.join([marker] * len(self._stored))}) "
            f"ON CONFLICT ({_quote(self.key)}) DO UPDATE SET {updates} WHERE excluded.{version} >= {table}.{version}"
        )

    def _deleted_cell(self, record: Mapping[str, str | None]) -> str | None:
        """The deleted column's cell: Zuora names it after the object (``Account.IsDeleted``)."""
        if self.deleted in record:
            return record[self.deleted]
        suffix = f".{self.deleted}"
        return next((value for name, value in record.items() if name.endswith(suffix)), None)

    def row_values(self, record: Mapping[str, str | None]) -> tuple[object, ...]:
        values: list[object] = []
        for column in self._stored:
            if column == self.deleted:
                values.append(_flag(self._deleted_cell(record), column))
            elif column not in record:
                raise AquaIntegrityError(f"the window's files have no column {column!r}")
            elif column == self.version:
                values.append(utc_text(record[column], column))
            else:
                values.append(record[column])
        if not values[self._stored.index(self.key)]:
            raise AquaIntegrityError(f"a record has no {self.key}")
        return tuple(values)

    def is_loaded(self, cursor: Any, marker: str, window: PublishedWindow) -> bool:
        cursor.execute(
            f"SELECT 1 FROM {_quote(self.ledger)} "
            f"WHERE target = {marker} AND manifest = {marker} AND sha256 = {marker}",
            (self.table, window.manifest_uri, window.sha256),
        )
        return cursor.fetchone() is not None

    def load(
        self, conn: Any, window: PublishedWindow | str, *, conn_id: str | None = None, placeholder: str | None = None
    ) -> LoadResult:
        """
        Merge one window in one transaction, recorded in the ledger; nothing when it is there already.

        :param conn: a DB-API connection (``hook.get_conn()``), not in autocommit mode.
        :param window: the window (:func:`read_window`) or its manifest URI.
        :param conn_id: the Airflow connection of the destination's object storage.
        :param placeholder: the driver's parameter marker; by default :func:`placeholder_of` ``conn``.
        """
        if isinstance(window, str):
            window = read_window(window, conn_id)
        marker = placeholder or placeholder_of(conn)
        cursor = conn.cursor()
        try:
            if self.is_loaded(cursor, marker, window):
                conn.rollback()
                return LoadResult(window.manifest_uri, window.sha256, loaded=False)
            upsert, rows, chunk = self.upsert_sql(marker), 0, []
            for record in iter_records(window, conn_id):
                chunk.append(self.row_values(record))
                if len(chunk) >= self.chunk_size:
                    cursor.executemany(upsert, chunk)
                    rows, chunk = rows + len(chunk), []
            if chunk:
                cursor.executemany(upsert, chunk)
                rows += len(chunk)
            self._record(cursor, marker, window)
            conn.commit()
        except BaseException:
            conn.rollback()
            # Another load of the same window committed first: its ledger row is there now.
            raced = self.is_loaded(conn.cursor(), marker, window)
            conn.rollback()
            if raced:
                return LoadResult(window.manifest_uri, window.sha256, loaded=False)
            raise
        return LoadResult(window.manifest_uri, window.sha256, loaded=True, rows=rows)

    def load_all(
        self, conn: Any, windows: Iterable[Mapping[str, Any] | str], *, conn_id: str | None = None
    ) -> list[LoadResult]:
        """:meth:`load` each window (an announced window or a manifest URI), each in its own transaction."""
        return [self.load(conn, w if isinstance(w, str) else str(w["manifest"]), conn_id=conn_id) for w in windows]

    def _record(self, cursor: Any, marker: str, window: PublishedWindow) -> None:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        cursor.execute(
            f"INSERT INTO {_quote(self.ledger)} (target, manifest, sha256, query, window_start, window_end, records, "
            f"loaded_at) VALUES ({', '.join([marker] * 8)})",
            (
                self.table,
                window.manifest_uri,
                window.sha256,
                window.query,
                window.window.get("start"),
                window.window.get("end"),
                window.records,
                now,
            ),
        )


def published_manifests(
    destination: object, query: str, destination_conn_id: str | None = None, cursor: str = "UpdatedDate"
) -> list[str]:
    """
    The manifest URIs of every window of ``query`` published under ``destination``, oldest first:
    for loading what was published before a consumer DAG existed (asset events reach only DAGs
    that were scheduled on the asset when they were emitted).
    """
    from airflow_provider_zuora_aqua.incremental.ledger import published_windows, window_folder
    from airflow_provider_zuora_aqua.results.destination import resolve_destination

    root = resolve_destination(destination, destination_conn_id)
    return [
        window_folder(root, query, window).child(MANIFEST_NAME).uri for window in published_windows(root, query, cursor)
    ]
