"""
Where result files go: what a user gave as a destination, resolved into a local path or an
object storage path, and the few operations on such files and folders that the results need.

A destination is a local path (``str`` or ``pathlib.Path``), a ``file://`` URI, any other URI
that Airflow's object storage knows (``s3://bucket/key``, ``gs://...``; the scheme needs its
provider, e.g. ``apache-airflow-providers-amazon[s3fs]`` for ``s3://``), or an
``airflow.sdk.ObjectStoragePath``. ``conn_id`` names the Airflow connection of an object store.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

LOCAL_SCHEMES = frozenset({"file", "local"})
#: Object stores whose OpenLineage namespace is ``scheme://bucket`` and name the key.
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "wasbs", "oss"})
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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
        fsync_folder(target.local.parent)
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


def fsync_folder(folder: Path) -> None:
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
