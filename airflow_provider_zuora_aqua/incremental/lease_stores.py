"""
Where a lease lives: the stores of :mod:`~airflow_provider_zuora_aqua.incremental.lease`.

Each store reads a lease file (bounded), creates it only if absent, replaces it only if it is
still the version read, and deletes it only if it is still the version read: a local disk
(hard link or exclusive create, rename aside), S3 (conditional writes), and any other object
store (plain writes, read back: it cannot guarantee one writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.results.destination import Destination, fsync_folder

UTC = timezone.utc
#: The lease file's name in a query's folder.
LEASE_NAME = "_lease.json"
#: A lease file is a few hundred bytes: a larger one is not ours, and no more than this is read.
MAX_LEASE_BYTES = 64 * 1024
#: S3 answers to a conditional write whose condition failed, or raced another conditional write.
_S3_CONFLICTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_S3_UNSUPPORTED = frozenset({"NotImplemented", "501"})
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_S3_READ_SECONDS = 120.0


@dataclass(frozen=True)
class Found:
    """A lease file as read: its first bytes and what identifies this very version of it."""

    raw: bytes
    #: Changes with every write (an ETag, or inode, mtime and digest of the bytes).
    version: str
    modified: datetime | None
    #: Why it is no lease at all (not a regular file), None when its bytes are to be judged.
    problem: str | None = None


class Store(Protocol):
    uri: str
    #: Whether a create and a replace are atomic conditional writes (one writer guaranteed).
    one_writer: bool

    def read(self) -> Found | None: ...

    def create(self, data: bytes) -> str | None:
        """Write the file if there is none; its new version, None when one exists."""

    def replace(self, data: bytes, expected: Found) -> str | None:
        """Replace the file if it still is ``expected``; its new version, None when it changed."""

    def rewrite(self, data: bytes, expected: Found) -> str | None:
        """:meth:`replace` for the holder's renewal: never leaves the name empty, even for a moment."""

    def delete(self, expected: Found) -> bool:
        """Remove the file if it still is ``expected``; whether it was removed."""


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class _LocalStore:
    """A lease file on a local (or network) disk."""

    one_writer = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.uri = path.as_uri()

    def read(self) -> Found | None:
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
        fsync_folder(self.path.parent)
        return version

    def replace(self, data: bytes, expected: Found) -> str | None:
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

    def rewrite(self, data: bytes, expected: Found) -> str | None:
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
        fsync_folder(self.path.parent)
        return version

    def delete(self, expected: Found) -> bool:
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
        fsync_folder(path.parent)
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
        fsync_folder(aside.parent)

    @staticmethod
    def _read(path: Path) -> Found | None:
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
            return Found(b"", _local_version(info, b""), _mtime(info), f"it cannot be opened ({exc.strerror})")
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                return Found(b"", _local_version(info, b""), _mtime(info), "it is not a regular file")
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
            return Found(b"", f"unreadable:{exc.errno}", None, f"it cannot be read ({exc.strerror})")
        finally:
            os.close(descriptor)
        return Found(raw, _local_version(info, raw), _mtime(info))


def _local_version(info: os.stat_result, raw: bytes) -> str:
    return f"{info.st_dev}:{info.st_ino}:{info.st_mtime_ns}:{info.st_size}:{_digest(raw)}"


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, UTC)


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

    def read(self) -> Found | None:
        if self._fallback is not None:
            return self._fallback.read()
        # s3fs runs its calls on its own event loop thread; the body is read there too.
        return asyncio.run_coroutine_threadsafe(self._read(), self.fs.loop).result(_S3_READ_SECONDS)

    async def _read(self) -> Found | None:
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
        return Found(b"".join(chunks), str(response["ETag"]), modified if isinstance(modified, datetime) else None)

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

    def replace(self, data: bytes, expected: Found) -> str | None:
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

    def delete(self, expected: Found) -> bool:
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

    def read(self) -> Found | None:
        try:
            with self.remote.open("rb") as handle:
                raw = handle.read(MAX_LEASE_BYTES + 1)
        except (FileNotFoundError, IsADirectoryError):
            return None
        modified = None
        with contextlib.suppress(Exception):
            modified = _remote_modified(self.remote.fs.info(self.remote.path))
        return Found(raw, _digest(raw), modified)

    def create(self, data: bytes) -> str | None:
        if self.read() is not None:
            return None
        return self._write(data)

    def replace(self, data: bytes, expected: Found) -> str | None:
        current = self.read()
        if current is None or current.version != expected.version:
            return None
        return self._write(data)

    rewrite = replace

    def delete(self, expected: Found) -> bool:
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
                return parse_time(value, key)
    return None


def store_of(folder: Destination, log: Any) -> Store:
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


def parse_time(value: object, name: str) -> datetime:
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
