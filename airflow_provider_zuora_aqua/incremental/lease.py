"""
One writer per destination and query: a lease in the query's folder.

Two exports of one query into one destination at once (two DAGs, two task instances) would both
plan from the same watermark: the same windows exported twice, overlapping windows, and every
later run refused on the overlap. So an export holds the lease of each query's folder from before
it reads the watermark until it has published its last window::

    <destination>/<query>/_lease.json

(the watermark's reader only reads folders named like a window, see
:mod:`~airflow_provider_zuora_aqua.incremental.ledger`: this file is not one). It is a small JSON
object: the holder (``dag_id``, ``task_id``, ``run_id``, ``try_number``, ``map_index``, ``host``),
a random ``token`` that tells this holder's lease from any other, and ``acquired``, ``renewed``
and ``expires`` (UTC, ISO 8601).

* **Acquired** by an atomic create: on a local disk the lease is written whole under a hidden
  name and hard-linked to ``_lease.json`` (which fails when it exists; ``O_CREAT | O_EXCL`` where
  there are no hard links), on S3 a conditional put (``If-None-Match: *``). Of two writers,
  exactly one creates the file.
* **Renewed** every TTL / 3 by a daemon thread while the export runs, and only while the file still
  holds this lease's token. A lease not renewed within its TTL (the store unreachable, the worker
  stalled), or taken over by another holder, is *lost*: :meth:`DestinationLease.check`, called
  before each window is published, then raises and the export stops before publishing anything
  more.
* **Released** at the end: the file is removed, only if it still holds this lease's token.
* A **second writer fails fast** with :class:`~airflow_provider_zuora_aqua.exceptions.AquaDestinationBusyError`
  naming the holder and when its lease expires (or waits up to ``wait_seconds`` for it first).
* A lease whose holder died is **taken over** once it has expired, atomically: of several takers,
  exactly one wins and the others fail as second writers. On a local disk the taker renames the
  expired file aside, checks that it moved the very file it judged expired (only one rename can
  move it), then creates its own as above (a new writer that comes in between gets the lease
  instead: still one writer); on S3 it replaces the object with a conditional put (``If-Match``
  on the ETag of the expired one).
* A lease file that cannot be read (not JSON, not ours, over 64 KiB, not a regular file) counts
  as held until its last modification plus the TTL, then is taken over like an expired one. A
  lease is never trusted for longer than :data:`MAX_LEASE_TTL` after its file last changed.

Which stores guarantee one writer:

* **Local disks** (``file://``, a path), and network file systems with an atomic exclusive
  create and rename (NFSv3 and later): yes.
* **Amazon S3** (``s3://``), and S3-compatible stores that honour conditional writes
  (``If-None-Match: *`` and ``If-Match`` on PutObject, ``If-Match`` on DeleteObject): yes.
* **Any other object store** (``gs://``, ``abfs://``, ...), and an S3-compatible store that
  refuses conditional writes (``501 NotImplemented``): **no**. The lease is then written and read
  back to compare its token, which catches most collisions but cannot guarantee one writer: two
  exports that start within moments of each other can both believe they hold it. A warning says
  so; give each export its own destination there. An S3-compatible store that silently ignores
  the conditions cannot be told apart from S3 and guarantees nothing either.

Expiry compares the ``expires`` a holder wrote with the reader's clock (and, for an unreadable
file, the store's modification time): the hosts' clocks must agree within a small part of the
TTL. A holder considers its lease lost once its own monotonic clock says it went unrenewed for a
TTL, whatever the wall clock says. (On a local disk a renewal checks the token, then replaces the
file: it could only overwrite a taker's lease if the taker's clock ran ahead by most of a TTL; the
taker's :meth:`DestinationLease.check` then finds its lease lost before it publishes.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaDestinationBusyError, AquaError
from airflow_provider_zuora_aqua.results.staging import Destination

UTC = timezone.utc
#: The lease file's name in a query's folder.
LEASE_NAME = "_lease.json"
#: Renewed every 100 s: two renewals in a row may fail (a store hiccup, a stalled worker) before
#: the lease is lost, and a dead holder blocks its query for at most 5 minutes, no longer than
#: Airflow's default ``retry_delay``, so the retry of a killed try usually finds it expired.
DEFAULT_LEASE_TTL = timedelta(minutes=5)
MIN_LEASE_TTL = timedelta(seconds=1)
#: No lease is trusted for longer than this after its file last changed (a far-off ``expires``).
MAX_LEASE_TTL = timedelta(hours=1)
#: A lease file is a few hundred bytes: a larger one is not ours, and no more than this is read.
MAX_LEASE_BYTES = 64 * 1024
#: How often a waiting writer looks at the lease again.
POLL_SECONDS = 1.0
_FORMAT = 1
_TOKEN_BYTES = 16
_MAX_TEXT = 250
#: A create, read and take-over may race other writers this many times before the writer gives up.
_ATTEMPTS = 3
#: S3 answers to a conditional write whose condition failed, or raced another conditional write.
_S3_CONFLICTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_S3_UNSUPPORTED = frozenset({"NotImplemented", "501"})
_RELEASE_JOIN_SECONDS = 10.0
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_S3_READ_SECONDS = 120.0
#: A renewal that failed is tried again this soon (or at the next renewal if sooner).
_RETRY_SECONDS = 10.0

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- the holder and what a lease file says ------------------------------------------------------


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease: a task instance and the host it runs on."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int = -1
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def of_task_instance(cls, ti: Any) -> LeaseHolder:
        """The holder of an Airflow task instance (``context["ti"]``), on this host."""
        map_index = getattr(ti, "map_index", None)
        return cls(
            dag_id=str(ti.dag_id),
            task_id=str(ti.task_id),
            run_id=str(ti.run_id),
            try_number=int(getattr(ti, "try_number", 0) or 0),
            map_index=-1 if map_index is None else int(map_index),
            host=socket.gethostname(),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> LeaseHolder:
        """:raises ValueError: not a holder as :meth:`to_json` writes one."""
        if not isinstance(data, dict):
            raise ValueError("its holder is not a JSON object")
        values: dict[str, Any] = {}
        for name in ("dag_id", "task_id", "run_id", "host"):
            value = data.get(name)
            if not isinstance(value, str) or len(value) > _MAX_TEXT:
                raise ValueError(f"its holder's {name} is not a text of at most {_MAX_TEXT} characters")
            values[name] = value
        for name in ("try_number", "map_index"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"its holder's {name} is not a whole number")
            values[name] = value
        return cls(**values)

    def describe(self) -> str:
        task = f"task {self.task_id!r}" + (f" (map index {self.map_index})" if self.map_index >= 0 else "")
        return f"dag {self.dag_id!r}, {task}, run {self.run_id!r}, try {self.try_number}, on host {self.host!r}"


@dataclass(frozen=True)
class _Found:
    """A lease file as read: its first bytes and what identifies this very version of it."""

    raw: bytes
    #: Changes with every write (an ETag, or inode, mtime and digest of the bytes).
    version: str
    modified: datetime | None
    #: Why it is no lease at all (not a regular file), None when its bytes are to be judged.
    problem: str | None = None


@dataclass(frozen=True)
class LeaseState:
    """What a reader makes of a lease file."""

    holder: LeaseHolder | None
    token: str | None
    #: When it may be taken over.
    expires: datetime
    #: Why the file cannot be read as a lease (None: it can).
    problem: str | None = None


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: object, name: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"its {name} is not a time")
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"its {name} {value!r} is not an ISO 8601 time") from None
    if instant.tzinfo is None:
        raise ValueError(f"its {name} {value!r} has no time zone")
    return instant.astimezone(UTC)


def _encode(holder: LeaseHolder, token: str, acquired: datetime, renewed: datetime, ttl: timedelta) -> bytes:
    document = {
        "format": _FORMAT,
        "holder": holder.to_json(),
        "token": token,
        "acquired": _iso(acquired),
        "renewed": _iso(renewed),
        "expires": _iso(renewed + ttl),
        "ttl_seconds": ttl.total_seconds(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def _parse(raw: bytes) -> tuple[LeaseHolder, str, datetime]:
    """:raises ValueError: not a lease file of ours (the message says why)."""
    if len(raw) > MAX_LEASE_BYTES:
        raise ValueError(f"it is over {MAX_LEASE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("it is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"it is not a JSON object of format {_FORMAT}")
    token = data.get("token")
    if not isinstance(token, str) or not 16 <= len(token) <= 128:
        raise ValueError("it holds no token")
    return LeaseHolder.from_json(data.get("holder")), token, _parse_time(data.get("expires"), "expires")


def judge(found: _Found, ttl: timedelta) -> LeaseState:
    """
    The holder, token and expiry of a lease file. One that cannot be read counts as held until
    its last modification plus ``ttl`` (expired at once when the store gives no modification
    time); a readable one is never trusted beyond its last modification plus :data:`MAX_LEASE_TTL`.
    """
    problem = found.problem
    if problem is None:
        try:
            holder, token, expires = _parse(found.raw)
        except ValueError as exc:
            problem = str(exc)
        else:
            if found.modified is not None:
                expires = min(expires, found.modified + MAX_LEASE_TTL)
            return LeaseState(holder, token, expires)
    expires = found.modified + ttl if found.modified is not None else datetime.min.replace(tzinfo=UTC)
    return LeaseState(None, None, expires, problem)


# -- stores -------------------------------------------------------------------------------------


class _Store(Protocol):
    uri: str
    #: Whether a create and a replace are atomic conditional writes (one writer guaranteed).
    one_writer: bool

    def read(self) -> _Found | None: ...

    def create(self, data: bytes) -> str | None:
        """Write the file if there is none; its new version, None when one exists."""

    def replace(self, data: bytes, expected: _Found) -> str | None:
        """Replace the file if it still is ``expected``; its new version, None when it changed."""

    def rewrite(self, data: bytes, expected: _Found) -> str | None:
        """:meth:`replace` for the holder's renewal: never leaves the name empty, even for a moment."""

    def delete(self, expected: _Found) -> bool:
        """Remove the file if it still is ``expected``; whether it was removed."""


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class _LocalStore:
    """A lease file on a local (or network) disk."""

    one_writer = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.uri = path.as_uri()

    def read(self) -> _Found | None:
        return self._read(self.path)

    def create(self, data: bytes) -> str | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AquaConfigurationError(f"{self.uri}: its folder cannot be made ({exc})") from None
        # Written whole under a hidden name, then linked to the lease's name: a link fails when a
        # lease exists (as O_EXCL does), and a reader never sees a lease half written.
        temporary = self._temporary()
        version = self._fill(os.open(temporary, _NEW_FILE, 0o644), temporary, data)
        try:
            os.link(temporary, self.path)
        except FileExistsError:
            return None
        except OSError:  # no hard links on this file system: an exclusive create, then the bytes
            try:
                descriptor = os.open(self.path, _NEW_FILE, 0o644)
            except FileExistsError:
                return None
            return self._fill(descriptor, self.path, data)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        _fsync_folder(self.path.parent)
        return version

    def replace(self, data: bytes, expected: _Found) -> str | None:
        aside = self._aside()
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return None
        try:
            moved = self._read(aside)
            if moved is None or moved.version != expected.version:
                self._put_back(aside)
                return None
            return self.create(data)
        finally:
            self._discard(aside)

    def rewrite(self, data: bytes, expected: _Found) -> str | None:
        current = self.read()
        if current is None or current.version != expected.version:
            return None
        temporary = self._temporary()
        version = self._fill(os.open(temporary, _NEW_FILE, 0o644), temporary, data)
        try:
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_folder(self.path.parent)
        return version

    def delete(self, expected: _Found) -> bool:
        aside = self._aside()
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved = self._read(aside)
            if moved is None or moved.version != expected.version:
                self._put_back(aside)
                return False
            return True
        finally:
            self._discard(aside)

    def _temporary(self) -> Path:
        return self.path.with_name(f".{LEASE_NAME}.{secrets.token_hex(6)}.tmp")

    def _aside(self) -> Path:
        return self.path.with_name(f"{LEASE_NAME}.{secrets.token_hex(6)}.stale")

    def _fill(self, descriptor: int, path: Path, data: bytes) -> str:
        """Write ``data`` to a file just made (removed again when that fails); its version."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
            info = os.fstat(descriptor)
        except BaseException:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.close(descriptor)
        _fsync_folder(path.parent)
        return _local_version(info, data)

    def _put_back(self, aside: Path) -> None:
        """Put a file moved aside by mistake back, unless a new one took its name meanwhile."""
        try:
            os.link(aside, self.path)
        except FileExistsError:
            return
        except OSError:  # no hard links here (or a folder): a rename, which would replace a new file
            if not os.path.lexists(self.path):
                with contextlib.suppress(OSError):
                    os.rename(aside, self.path)

    @staticmethod
    def _discard(aside: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            try:
                os.unlink(aside)
            except (IsADirectoryError, PermissionError):
                with contextlib.suppress(OSError):
                    os.rmdir(aside)  # a folder left as the lease: removed when empty, else left aside
        _fsync_folder(aside.parent)

    @staticmethod
    def _read(path: Path) -> _Found | None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        try:
            descriptor = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a symbolic link, no permission: no lease of ours
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                return None
            except OSError:
                raise AquaConfigurationError(f"{path.as_uri()} cannot be read ({exc}): remove it") from None
            return _Found(b"", _local_version(info, b""), _mtime(info), f"it cannot be opened ({exc.strerror})")
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                return _Found(b"", _local_version(info, b""), _mtime(info), "it is not a regular file")
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_LEASE_BYTES:
                chunk = os.read(descriptor, MAX_LEASE_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            raw = b"".join(chunks)
        except OSError as exc:
            return _Found(b"", f"unreadable:{exc.errno}", None, f"it cannot be read ({exc.strerror})")
        finally:
            os.close(descriptor)
        return _Found(raw, _local_version(info, raw), _mtime(info))


def _local_version(info: os.stat_result, raw: bytes) -> str:
    return f"{info.st_dev}:{info.st_ino}:{info.st_mtime_ns}:{info.st_size}:{_digest(raw)}"


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, UTC)


def _fsync_folder(folder: Path) -> None:
    """Make a create, rename or removal in ``folder`` durable (not every platform opens folders)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _s3_code(exc: BaseException) -> str | None:
    """The S3 error code behind an error s3fs translated (``PreconditionFailed``...)."""
    for error in (exc, exc.__cause__, exc.__context__):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return str(code or status or "") or None
    return None


class _S3Store:
    """A lease object on S3, written with conditional puts and deletes (through s3fs)."""

    one_writer = True

    def __init__(self, remote: Any, uri: str, log: logging.Logger | Any) -> None:
        self.remote = remote
        self.fs = remote.fs
        self.bucket, self.key, _ = self.fs.split_path(remote.path)
        self.uri = uri
        self.log = log
        self._fallback: _FsStore | None = None

    def read(self) -> _Found | None:
        if self._fallback is not None:
            return self._fallback.read()
        # s3fs runs its calls on its own event loop thread; the body is read there too.
        return asyncio.run_coroutine_threadsafe(self._read(), self.fs.loop).result(_S3_READ_SECONDS)

    async def _read(self) -> _Found | None:
        try:
            response = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            return None
        chunks: list[bytes] = []
        size = 0
        async with response["Body"] as body:
            while size <= MAX_LEASE_BYTES:
                chunk = await body.read(MAX_LEASE_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        modified = response.get("LastModified")
        return _Found(b"".join(chunks), str(response["ETag"]), modified if isinstance(modified, datetime) else None)

    def create(self, data: bytes) -> str | None:
        if self._fallback is not None:
            return self._fallback.create(data)
        try:
            return self._put(data, IfNoneMatch="*")
        except OSError as exc:
            if isinstance(exc, FileExistsError) or _s3_code(exc) in _S3_CONFLICTS:
                return None
            if _s3_code(exc) not in _S3_UNSUPPORTED:
                raise
        self.log.warning(
            "%s: the store refused a conditional write (If-None-Match): its lease is written and read back "
            "instead, which cannot guarantee one writer; give each export its own destination",
            self.uri,
        )
        self.one_writer = False
        self._fallback = _FsStore(self.remote, self.uri)
        return self._fallback.create(data)

    def replace(self, data: bytes, expected: _Found) -> str | None:
        if self._fallback is not None:
            return self._fallback.replace(data, expected)
        try:
            return self._put(data, IfMatch=expected.version)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if _s3_code(exc) in _S3_CONFLICTS:
                return None
            raise

    rewrite = replace

    def delete(self, expected: _Found) -> bool:
        if self._fallback is not None:
            return self._fallback.delete(expected)
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=expected.version)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if _s3_code(exc) in _S3_CONFLICTS:
                return False
            if _s3_code(exc) not in _S3_UNSUPPORTED:
                raise
            current = self.read()  # no conditional delete here: checked just before
            if current is None or current.version != expected.version:
                return False
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key)
        self.fs.invalidate_cache(self.remote.path)
        return True

    def _put(self, data: bytes, **condition: str) -> str:
        response = self.fs.call_s3(
            "put_object", Bucket=self.bucket, Key=self.key, Body=data, ContentType="application/json", **condition
        )
        self.fs.invalidate_cache(self.remote.path)
        return str(response["ETag"])


class _FsStore:
    """
    Any other object store: no conditional write, so each write is read back and compared. This
    catches most collisions, but cannot guarantee one writer.
    """

    one_writer = False

    def __init__(self, remote: Any, uri: str) -> None:
        self.remote = remote
        self.uri = uri

    def read(self) -> _Found | None:
        try:
            with self.remote.open("rb") as handle:
                raw = handle.read(MAX_LEASE_BYTES + 1)
        except (FileNotFoundError, IsADirectoryError):
            return None
        modified = None
        with contextlib.suppress(Exception):
            modified = _remote_modified(self.remote.fs.info(self.remote.path))
        return _Found(raw, _digest(raw), modified)

    def create(self, data: bytes) -> str | None:
        if self.read() is not None:
            return None
        return self._write(data)

    def replace(self, data: bytes, expected: _Found) -> str | None:
        current = self.read()
        if current is None or current.version != expected.version:
            return None
        return self._write(data)

    rewrite = replace

    def delete(self, expected: _Found) -> bool:
        current = self.read()
        if current is None or current.version != expected.version:
            return False
        self.remote.fs.rm(self.remote.path)
        return True

    def _write(self, data: bytes) -> str | None:
        with self.remote.open("wb") as handle:
            handle.write(data)
        back = self.read()
        return back.version if back is not None and back.raw == data else None


def _remote_modified(info: dict[str, Any]) -> datetime | None:
    for key in ("LastModified", "last_modified", "mtime", "updated", "creation_time"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return _parse_time(value, key)
    return None


def _store_of(folder: Destination, log: Any) -> _Store:
    target = folder.child(LEASE_NAME)
    if target.local is not None:
        return _LocalStore(target.local)
    remote: Any = target.remote
    protocol = remote.fs.protocol
    protocols = {protocol} if isinstance(protocol, str) else set(protocol)
    if protocols & {"s3", "s3a"} and hasattr(remote.fs, "call_s3"):
        return _S3Store(remote, target.uri, log)
    return _FsStore(remote, target.uri)


# -- the lease ----------------------------------------------------------------------------------


def _check_ttl(ttl: object) -> timedelta:
    if not isinstance(ttl, timedelta) or not MIN_LEASE_TTL <= ttl <= MAX_LEASE_TTL:
        raise AquaConfigurationError(
            f"lease ttl {ttl!r}: give a timedelta from {MIN_LEASE_TTL} to {MAX_LEASE_TTL} (default {DEFAULT_LEASE_TTL})"
        )
    return ttl


def _busy(uri: str, state: LeaseState) -> AquaDestinationBusyError:
    until = _iso(state.expires)
    advice = (
        "Two exports of one query into one destination would export the same windows twice. Wait: a retry of "
        "this task takes the lease once the other export ends; or give each export its own destination."
    )
    if state.holder is None:
        return AquaDestinationBusyError(
            f"{uri} is not a lease this provider can read ({state.problem}): it counts as held until {until} "
            f"(its last change plus the lease's TTL), then it is taken over. If no other export of this query into "
            f"this destination runs, remove it. {advice}",
            expires=until,
        )
    return AquaDestinationBusyError(
        f"{uri} is held by another export of this query into this destination: {state.holder.describe()}, until "
        f"{until} unless renewed (it is renewed while that export runs; it expires then if that export died). "
        f"{advice}",
        holder=state.holder.to_json(),
        expires=until,
    )


class DestinationLease:
    """
    The lease of one query's folder in a destination (see the module docs). Get one with
    :meth:`acquire`; use it as a context manager, or call :meth:`release` at the end.
    """

    def __init__(
        self,
        store: _Store,
        holder: LeaseHolder,
        token: str,
        *,
        ttl: timedelta,
        clock: Clock,
        log: Any,
        acquired: datetime,
        version: str,
        valid_until: float,
    ) -> None:
        self._store = store
        self.holder = holder
        self.token = token
        self.ttl = ttl
        self.acquired = acquired
        self._clock = clock
        self._log = log
        #: time.monotonic() after which the lease counts as lost unless renewed.
        self._valid_until = valid_until
        self.expires = acquired + ttl
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost: AquaDestinationBusyError | None = None
        self._released = False

    @property
    def uri(self) -> str:
        """The lease file's URI."""
        return self._store.uri

    @property
    def one_writer(self) -> bool:
        """Whether the store guarantees one writer (see the module docs)."""
        return self._store.one_writer

    @property
    def lost(self) -> bool:
        return self._lost is not None

    @classmethod
    def acquire(
        cls,
        folder: Destination,
        holder: LeaseHolder,
        *,
        ttl: timedelta = DEFAULT_LEASE_TTL,
        wait_seconds: float = 0.0,
        stop: threading.Event | None = None,
        clock: Clock = utc_now,
        renew: bool = True,
        log: Any = None,
    ) -> DestinationLease:
        """
        Take the lease of ``folder`` (a query's folder: ``destination.child(query)``) for ``holder``.

        :param ttl: how long the lease lasts unless renewed; renewed every ``ttl / 3``.
        :param wait_seconds: how long to wait, looking every second, for a lease held by another
            export (0: fail at once).
        :param stop: set to stop waiting at once (``on_kill``).
        :param clock: now, in UTC (for tests).
        :param renew: whether a daemon thread renews the lease until :meth:`release`.
        :raises AquaDestinationBusyError: another export holds the lease (the message names it).
        """
        ttl = _check_ttl(ttl)
        if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, (int, float)) or not wait_seconds >= 0:
            raise AquaConfigurationError(f"lease wait_seconds {wait_seconds!r}: give a number of seconds, 0 or more")
        log = log if log is not None else logging.getLogger(__name__)
        store = _store_of(folder, log)
        if not store.one_writer:
            log.warning(
                "%s: this store has no conditional write, so its lease cannot guarantee one writer: two exports "
                "that start together can both write this query; give each export its own destination",
                store.uri,
            )
        deadline = time.monotonic() + wait_seconds
        waiting = False
        while True:
            try:
                outcome = cls._attempt(store, holder, ttl, clock, log)
            except OSError as exc:
                raise AquaError(f"{store.uri}: the lease could not be read or written ({exc})") from exc
            if isinstance(outcome, DestinationLease):
                if renew:
                    outcome._start_renewer()
                return outcome
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                raise outcome
            if not waiting:
                log.info("%s Waiting up to %.0f s for it.", outcome.message, remaining)
                waiting = True
            if stop is not None:
                if stop.wait(min(POLL_SECONDS, remaining)):
                    raise outcome
            else:
                time.sleep(min(POLL_SECONDS, remaining))

    @classmethod
    def _attempt(
        cls, store: _Store, holder: LeaseHolder, ttl: timedelta, clock: Clock, log: Any
    ) -> DestinationLease | AquaDestinationBusyError:
        """One try at the lease: the lease, or the error naming who holds it."""
        token = secrets.token_hex(_TOKEN_BYTES)

        def held(version: str, started: float, acquired: datetime) -> DestinationLease:
            return cls(
                store,
                holder,
                token,
                ttl=ttl,
                clock=clock,
                log=log,
                acquired=acquired,
                version=version,
                valid_until=started + ttl.total_seconds(),
            )

        for _ in range(_ATTEMPTS):
            started, acquired = time.monotonic(), clock()
            version = store.create(_encode(holder, token, acquired, acquired, ttl))
            if version is not None:
                return held(version, started, acquired)
            found = store.read()
            if found is None:
                continue  # released meanwhile
            state = judge(found, ttl)
            if state.token == token:  # our own write, reported failed (a request sent again)
                return held(found.version, started, acquired)
            if clock() < state.expires:
                return _busy(store.uri, state)
            log.warning(
                "%s expired at %s (%s): taking it over",
                store.uri,
                _iso(state.expires),
                state.holder.describe() if state.holder is not None else state.problem,
            )
            started, acquired = time.monotonic(), clock()
            version = store.replace(_encode(holder, token, acquired, acquired, ttl), found)
            if version is not None:
                return held(version, started, acquired)
            # Another writer changed it first: judged again.
        return AquaDestinationBusyError(
            f"{store.uri} kept changing while this export tried to take it: another export of this query into this "
            "destination is starting. Wait: a retry of this task takes the lease once the other export ends; or "
            "give each export its own destination."
        )

    # -- while held -----------------------------------------------------------------------------

    def check(self) -> None:
        """
        Call before each publish: raise if the lease is lost (taken over by another holder, its
        file gone, or not renewed within its TTL). A store that cannot be read just now is no
        loss while the lease is still within its TTL: no one else can take it before then.

        :raises AquaDestinationBusyError: the lease is lost; nothing more may be published.
        """
        with self._lock:
            self._live()
            try:
                found = self._store.read()
            except Exception as exc:
                self._log.warning("Could not read %s to check the lease (%s): it is held until its TTL", self.uri, exc)
                return
            self._verify(found)

    def renew(self) -> None:
        """Renew the lease now (the renewer thread calls this every ``ttl / 3``)."""
        with self._lock:
            started = time.monotonic()
            self._live()
            found = self._store.read()
            self._verify(found)
            assert found is not None
            renewed = self._clock()
            data = _encode(self.holder, self.token, self.acquired, renewed, self.ttl)
            version = self._store.rewrite(data, found)
            if version is None:
                back = self._store.read()  # changed under us, or our own write reported failed
                self._verify(back)
                assert back is not None
                if back.raw != data:
                    raise self._lose("its file changed while it was being renewed")
                version = back.version
            self._valid_until = started + self.ttl.total_seconds()
            self.expires = renewed + self.ttl

    def release(self) -> None:
        """
        Stop renewing and remove the lease file if it still holds this lease; never raises (a
        lease that cannot be removed expires on its own).
        """
        self._stop.set()
        renewer = self._renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(_RELEASE_JOIN_SECONDS)
        with self._lock:
            if self._released:
                return
            self._released = True
            if self._lost is not None:
                return
            try:
                found = self._store.read()
                if found is None or judge(found, self.ttl).token != self.token:
                    self._log.warning("%s no longer held this export's lease when released", self.uri)
                elif self._store.delete(found):
                    self._log.info("Released %s", self.uri)
                else:
                    self._log.warning("%s changed while it was being released", self.uri)
            except Exception as exc:
                self._log.warning("Could not remove %s (%s): it expires at %s", self.uri, exc, _iso(self.expires))

    def __enter__(self) -> DestinationLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    # -- inside -------------------------------------------------------------------------------

    def _live(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._released:
            raise AquaDestinationBusyError(f"the lease on {self.uri} was released: nothing more may be published")
        if time.monotonic() >= self._valid_until:
            raise self._lose(f"it was not renewed within its TTL of {self.ttl}")

    def _verify(self, found: _Found | None) -> None:
        if found is None:
            raise self._lose("its file was removed")
        state = judge(found, self.ttl)
        if state.token != self.token:
            if state.holder is not None:
                raise self._lose(
                    f"it is now held by {state.holder.describe()}, until {_iso(state.expires)}",
                    holder=state.holder.to_json(),
                    expires=_iso(state.expires),
                )
            raise self._lose(f"its file was replaced by one that is no lease ({state.problem})")

    def _lose(self, why: str, **details: Any) -> AquaDestinationBusyError:
        self._lost = AquaDestinationBusyError(
            f"The lease on {self.uri} was lost: {why}. This export stops before publishing anything more, or two "
            "exports would write the same windows; a retry of this task takes the lease again once it is free.",
            **details,
        )
        self._stop.set()
        return self._lost

    def _start_renewer(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name=f"aqua-lease {self.uri}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        interval = self.ttl.total_seconds() / 3
        wait = interval
        while not self._stop.wait(wait):
            try:
                self.renew()
            except AquaDestinationBusyError as exc:
                if not self._released:
                    self._log.error("%s", exc)
                return
            except Exception as exc:
                # Sooner than the next renewal: the lease is lost once a TTL passes without one.
                wait = min(interval, _RETRY_SECONDS)
                self._log.warning("Could not renew %s (%s): trying again in %.0f s", self.uri, exc, wait)
            else:
                wait = interval
