"""Where result files go, and how they get there without ever showing a partial file.

A destination is a local path (``str`` or ``pathlib.Path``), a ``file://`` URI, any other URI
that Airflow's object storage knows (``s3://bucket/key``, ``gs://...``; the scheme needs its
provider, e.g. ``apache-airflow-providers-amazon[s3fs]`` for ``s3://``), or an
``airflow.sdk.ObjectStoragePath``. ``conn_id`` names the Airflow connection of an object store.

A :class:`StagedFile` is written first and becomes the destination only on
:meth:`StagedFile.publish`:

* local: a hidden temporary name in the destination's own folder, flushed and fsynced, then
  renamed over the final name with ``os.replace`` (atomic on one filesystem);
* object storage: a local spool file, uploaded once complete and verified; the spool file is
  always removed. Files published together (a batch's segments) wait, verified, under a
  hidden name beside their destination (:meth:`StagedFile.park`), so that the local disk holds
  one at a time, and are then moved into place within the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

LOCAL_SCHEMES = frozenset({"file", "local"})
#: Object stores whose OpenLineage namespace is ``scheme://bucket`` and name the key.
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "wasbs", "oss"})
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_UPLOAD_CHUNK = 8 * 1024 * 1024
#: Every this many bytes written, the spool's new pages are handed to the disk (see StagedFile.write).
_WRITEBACK_BYTES = 16 * 1024 * 1024
_FADVISE = hasattr(os, "posix_fadvise")
_TEMP_PREFIX_CHARS = 100
_SPOOL_PREFIX = "aqua-spool-"
#: The names of files being written (:func:`hidden_part_name`): nothing else is ever swept.
HIDDEN_PART = re.compile(rf"\.(?P<name>.{{1,{_TEMP_PREFIX_CHARS}}})\.[0-9a-f]{{12}}\.part", re.DOTALL)


@dataclass(frozen=True)
class Destination:
    """A resolved file or folder: on local disk (``local``) or in object storage (``remote``)."""

    local: Path | None = None
    remote: ObjectStoragePath | None = None

    @property
    def uri(self) -> str:
        """``file:///...`` for local paths, the store's URI (``s3://bucket/key``) otherwise."""
        if self.local is not None:
            return self.local.as_uri()
        # Airflow writes the connection id into the authority (s3://conn@bucket/key): not part of the URI.
        parts = urlsplit(str(self.remote))
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()

    @property
    def name(self) -> str:
        return self.local.name if self.local is not None else self.remote.name  # type: ignore[union-attr]

    def child(self, name: str) -> Destination:
        """The destination of ``name`` inside this folder (``name`` must be a plain file name)."""
        if self.local is not None:
            return Destination(local=self.local / name)
        return Destination(remote=self.remote / name)  # type: ignore[operator]

    def lineage_name(self) -> tuple[str, str]:
        """OpenLineage's ``(namespace, name)`` of this destination: see :func:`lineage_dataset_name`."""
        return lineage_dataset_name(self.uri)


def lineage_dataset_name(uri: str) -> tuple[str, str]:
    """
    OpenLineage's ``(namespace, name)`` of a file URI: ``file`` and the path for local files,
    ``s3://bucket`` and the key (and likewise for other bucket stores), else ``scheme://host``
    and the path.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in LOCAL_SCHEMES or not scheme:
        return "file", unquote(parts.path)
    if scheme in _BUCKET_SCHEMES:
        return f"{scheme}://{parts.netloc}", parts.path.lstrip("/")
    return f"{scheme}://{parts.netloc}", parts.path or "/"


def resolve_destination(destination: object, conn_id: str | None = None) -> Destination:
    """
    Turn what the user gave into a :class:`Destination`; refuse anything else before any download.

    :param destination: a local path, a URI string or an ``ObjectStoragePath``.
    :param conn_id: the Airflow connection of an object store; ignored for local paths.
    """
    from airflow.sdk import ObjectStoragePath

    if isinstance(destination, ObjectStoragePath):
        if (destination.protocol or "file") in LOCAL_SCHEMES:
            return Destination(local=_local_path(destination.path))
        own_conn_id = path_conn_id(destination)
        if conn_id and own_conn_id and conn_id != own_conn_id:
            raise AquaConfigurationError(
                f"destination {str(destination)!r} has connection {own_conn_id!r} but destination_conn_id "
                f"is {conn_id!r}: set only one of them"
            )
        if conn_id and not own_conn_id:
            destination = ObjectStoragePath(str(destination), conn_id=conn_id)
        return Destination(remote=destination)
    if isinstance(destination, os.PathLike):
        return Destination(local=_local_path(os.fspath(destination)))
    if not isinstance(destination, str) or not destination.strip() or destination.strip() == "None":
        raise AquaConfigurationError(
            f"destination {destination!r} is not a destination: pass a local folder or file path, a file:// URI, "
            "an object storage URI such as s3://bucket/prefix/, or an airflow.sdk.ObjectStoragePath"
        )
    destination = destination.strip()
    if not _URI.match(destination):
        return Destination(local=_local_path(destination))
    parts = urlsplit(destination)
    if parts.scheme.lower() in LOCAL_SCHEMES:
        if parts.netloc not in ("", "localhost"):
            raise AquaConfigurationError(
                f"destination {destination!r} names host {parts.netloc!r}: a file:// URI must be local "
                "(file:///absolute/path)"
            )
        return Destination(local=_local_path(unquote(parts.path)))
    try:
        # No conn_id keyword without one: Airflow 3.0 lets it override the URI's own (s3://conn@bucket).
        return Destination(remote=ObjectStoragePath(destination, **({"conn_id": conn_id} if conn_id else {})))
    except (ValueError, TypeError) as exc:
        raise AquaConfigurationError(f"destination {destination!r} is not a usable object storage URI: {exc}") from None


def path_conn_id(path: ObjectStoragePath) -> str | None:
    """The connection id of an ``ObjectStoragePath`` (a property from Airflow 3.1, a storage option before)."""
    return getattr(path, "conn_id", None) or (getattr(path, "storage_options", None) or {}).get("conn_id")


def _local_path(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


class StagedFile:
    """
    A file being written that becomes its destination only on :meth:`publish`.

    Use it as a context manager: leaving the block without publishing (an error, a failed
    check) removes everything written, and the destination is untouched.
    """

    def __init__(self, target: Destination) -> None:
        self.target = target
        if target.local is not None:
            if target.local.is_dir():
                raise AquaConfigurationError(
                    f"destination {str(target.local)!r} is a folder: give the path of the file to write"
                )
            folder = target.local.parent
            folder.mkdir(parents=True, exist_ok=True)
            # Same folder as the final name, so that the rename is atomic; hidden; mode from the umask.
            path = folder / hidden_part_name(target.local.name)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        else:
            descriptor, name = tempfile.mkstemp(prefix=_SPOOL_PREFIX, suffix=".part")
            path = Path(name)
        #: The local spool file (zip is counted by reading it back: it needs seeking).
        self.path = path
        self.file: BinaryIO = os.fdopen(descriptor, "w+b")
        self.published = False
        self._not_handed_over = 0
        self._parked: Any = None
        self._parked_size = 0

    def write(self, data: bytes) -> None:
        """
        Append ``data`` to the spool.

        Every 16 MiB the new pages are handed to the disk (``POSIX_FADV_DONTNEED``, which on
        Linux starts their writeback without waiting and later drops them from the page
        cache): the disk writes overlap the download instead of piling up for the final fsync,
        and a 2 GB file does not crowd the page cache of the worker.
        """
        self.file.write(data)
        self._not_handed_over += len(data)
        if self._not_handed_over >= _WRITEBACK_BYTES and _FADVISE:
            self.file.flush()
            end = self.file.tell()
            start = end - self._not_handed_over
            os.posix_fadvise(self.file.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
            self._not_handed_over = 0

    def restart(self) -> None:
        """Throw away what was written: the next bytes start the file again."""
        self.file.seek(0)
        self.file.truncate()
        self._not_handed_over = 0

    def park(self) -> None:
        """
        Give back the local disk of a complete spool before :meth:`publish`, for files that are
        published together (a batch's segments): object storage gets it under a hidden name
        beside the destination, and :meth:`publish` then moves it into place within the store.
        A local spool already sits beside its destination: nothing to do.
        """
        if self.target.local is not None or self._parked is not None:
            return
        remote: Any = self.target.remote
        hidden = remote.with_name(hidden_part_name(remote.name))
        self._parked = hidden
        self._parked_size = self._upload(hidden)
        self.discard_spool()

    def publish(self) -> None:
        """Make the complete, verified file the destination."""
        if self.target.local is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.path, self.target.local)
            _fsync_folder(self.target.local.parent)
        elif self._parked is not None:
            remote: Any = self.target.remote
            remote.fs.mv(self._parked.path, remote.path)
            self._parked = None
            _check_size(remote, self._parked_size)
        else:
            _check_size(self.target.remote, self._upload(self.target.remote))
        self.published = True

    def discard_spool(self) -> None:
        """Remove the local spool file (a published local spool is already gone)."""
        try:
            self.file.close()
        except OSError:
            pass  # a full disk fails the flush of the last buffered bytes: the spool goes all the same
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def discard(self) -> None:
        """Remove everything not published: the spool file, and a parked object."""
        self.discard_spool()
        parked, self._parked = self._parked, None
        if parked is not None:
            with contextlib.suppress(Exception):  # best effort: the hidden name says what it is
                parked.fs.rm(parked.path)

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.discard()

    def _upload(self, remote: Any) -> int:
        """Copy the spool to ``remote``; return its size."""
        self.file.flush()
        size = self.file.tell()
        self.file.close()
        with open(self.path, "rb") as source:
            sink = remote.open("wb")
            try:
                shutil.copyfileobj(source, sink, _UPLOAD_CHUNK)
            except BaseException:
                # Closing an fsspec file commits what was written: abort the upload instead.
                getattr(sink, "discard", sink.close)()
                raise
            sink.close()
        return size


def hidden_part_name(name: str) -> str:
    """The hidden name a file is written under beside its final ``name`` (:data:`HIDDEN_PART`)."""
    return f".{name[:_TEMP_PREFIX_CHARS]}.{secrets.token_hex(6)}.part"


def hidden_part_for(part_name: str, names: Iterable[str]) -> bool | None:
    """
    Whether ``part_name`` is a hidden part (:func:`hidden_part_name`) of one of ``names``;
    None when it is no hidden part of ours at all.
    """
    found = HIDDEN_PART.fullmatch(part_name)
    if found is None:
        return None
    return found.group("name") in {name[:_TEMP_PREFIX_CHARS] for name in names}


def same_file(first: Destination, second: Destination) -> bool:
    """Whether two names reach one file (``A.csv`` and ``a.csv`` on a case-insensitive disk)."""
    if first.local is not None and second.local is not None:
        try:
            return os.path.samefile(first.local, second.local)
        except OSError:
            return False
    return first.uri == second.uri


def resolve_folder(destination: object, conn_id: str | None = None) -> Destination:
    """
    :func:`resolve_destination` for a folder, checked before any file is requested: an
    existing file (or a file where a parent folder should be) raises :class:`AquaConfigurationError`.
    """
    folder = resolve_destination(destination, conn_id)
    if folder.local is not None:
        existing = next((path for path in (folder.local, *folder.local.parents) if path.exists()), None)
        if existing is not None and not existing.is_dir():
            raise AquaConfigurationError(
                f"destination {str(folder.local)!r} must be a folder, but {str(existing)!r} is an existing file: "
                "give the path of a folder (it is created when missing)"
            )
        return folder
    remote: Any = folder.remote
    if remote.is_file():
        raise AquaConfigurationError(
            f"destination {folder.uri!r} must be a folder, but it is an existing object: give a prefix that ends "
            "with '/' or a new one"
        )
    return folder


def children(folder: Destination) -> list[str]:
    """The names of the files directly in ``folder`` (none when it does not exist)."""
    if folder.local is not None:
        if not folder.local.is_dir():
            return []
        return sorted(entry.name for entry in os.scandir(folder.local) if entry.is_file(follow_symlinks=False))
    remote: Any = folder.remote
    if not remote.exists():
        return []
    return sorted(path.name for path in remote.iterdir() if path.is_file())


def modified_seconds_ago(target: Destination) -> float | None:
    """Seconds since ``target`` was last written (None when it is gone or the store does not say)."""
    try:
        if target.local is not None:
            return time.time() - target.local.stat(follow_symlinks=False).st_mtime
        info: Any = target.remote.stat()  # type: ignore[union-attr]
    except (FileNotFoundError, OSError):
        return None
    modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(modified, datetime):
        return (datetime.now(timezone.utc) - modified).total_seconds()
    if isinstance(modified, (int, float)):
        return time.time() - modified
    return None


def remove(target: Destination) -> None:
    """
    Remove a file for good: locally the removal is made durable (folder fsync) before this
    returns, so that a crash cannot bring the file back; in object storage a delete is durable.
    """
    if target.local is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target.local)
        _fsync_folder(target.local.parent)
    else:
        remote: Any = target.remote
        with contextlib.suppress(FileNotFoundError):
            remote.fs.rm(remote.path)


def read_small(target: Destination, limit: int) -> bytes | None:
    """The bytes of a file of at most ``limit`` bytes; None when it does not exist; longer: ``limit + 1`` bytes."""
    path: Any = target.local if target.local is not None else target.remote
    try:
        with path.open("rb") as handle:
            return handle.read(limit + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None


def sweep_spools(max_age: float) -> int:
    """Remove local spool files of object-storage uploads a killed process left, unmodified for ``max_age`` s."""
    removed = 0
    folder = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not (entry.name.startswith(_SPOOL_PREFIX) and entry.name.endswith(".part")):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and time.time() - entry.stat().st_mtime > max_age:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _check_size(remote: Any, size: int) -> None:
    stored = remote.fs.size(remote.path)
    if stored != size:
        raise AquaIntegrityError(f"the upload to {remote} stored {stored} bytes instead of {size}")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash could otherwise forget it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
