"""How result files get to their destination without ever showing a partial file.

A :class:`StagedFile` is written first and becomes the destination
(:class:`~.destination.Destination`) only on :meth:`StagedFile.publish`:

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
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError
from airflow_provider_zuora_aqua.results.destination import fsync_folder

if TYPE_CHECKING:
    from airflow_provider_zuora_aqua.results.destination import Destination

_UPLOAD_CHUNK = 8 * 1024 * 1024
#: Every this many bytes written, the spool's new pages are handed to the disk (see StagedFile.write).
_WRITEBACK_BYTES = 16 * 1024 * 1024
_FADVISE = hasattr(os, "posix_fadvise")
_TEMP_PREFIX_CHARS = 100
_SPOOL_PREFIX = "aqua-spool-"
#: The names of files being written (:func:`hidden_part_name`): nothing else is ever swept.
HIDDEN_PART = re.compile(rf"\.(?P<name>.{{1,{_TEMP_PREFIX_CHARS}}})\.[0-9a-f]{{12}}\.part", re.DOTALL)


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
            fsync_folder(self.target.local.parent)
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
