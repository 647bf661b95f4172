"""Result files spooled to disk: built once, lazily, then served from disk in chunks.

A file's bytes depend only on its :class:`~.results.FileContent`, so the first download of
a file id writes it to a private temporary directory and every later download (and every
``Range``) reads the same bytes back. Writing stops early once a file outgrows the size cap,
which is then remembered instead of the file. The transport-gzip variant (``Content-Encoding:
gzip``) is spooled the same way, next to the stored file. :meth:`FileStore.close` removes the
directory; a store that is never closed removes it when the interpreter exits.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .results import FileContent, write_file

_COPY_CHUNK = 1024 * 1024
_WRITE_BUFFER = 1024 * 1024
_TRANSPORT_GZIP_LEVEL = 1
_MIB = 1024 * 1024


class FileTooLargeError(Exception):
    """The file is larger than the simulator's ``max_file_bytes``."""

    def __init__(self, cap_bytes: int) -> None:
        super().__init__(f"the file is larger than {cap_bytes} bytes")
        self.cap_bytes = cap_bytes

    @property
    def cap_megabytes(self) -> int:
        """The cap in whole megabytes (MiB, rounded up), as Zuora's 403 body states it."""
        return max(1, math.ceil(self.cap_bytes / _MIB))


class FileStoreClosedError(Exception):
    """The simulator is stopping: its spool directory is gone."""


@dataclass(frozen=True)
class SpooledFile:
    """Bytes on disk: where they are and how many."""

    path: str
    size: int


class FileStore:
    """The spool of result files of one simulator; thread-safe.

    :param max_file_bytes: files larger than this are refused with :class:`FileTooLargeError`.
    """

    def __init__(self, max_file_bytes: int) -> None:
        self._max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._spooled: dict[str, SpooledFile] = {}
        self._too_large: set[str] = set()
        self._directory: str | None = None
        self._closed = False
        self._cleanup: weakref.finalize | None = None

    @property
    def directory(self) -> str | None:
        """The spool directory, None until a file was first downloaded."""
        return self._directory

    def stored(self, file_id: str, content: FileContent) -> SpooledFile:
        """The file as stored (in the job's format); built on first use."""
        return self._get(file_id, lambda path: self._build(path, content), self._max_file_bytes)

    def transport_gzip(self, file_id: str, stored: SpooledFile) -> SpooledFile:
        """The stored bytes gzipped for ``Content-Encoding: gzip``; built on first use."""
        # The cap is on the file as stored; its transport encoding is not held to it.
        return self._get(f"{file_id}.gz", lambda path: _gzip_copy(stored.path, path), None)

    def discard(self, file_ids: Iterable[str]) -> None:
        """Delete the spooled bytes of purged files (a download already under way keeps its copy)."""
        with self._lock:
            for file_id in file_ids:
                for key in (file_id, f"{file_id}.gz"):
                    spooled = self._spooled.pop(key, None)
                    if spooled is not None:
                        with contextlib.suppress(OSError):
                            os.unlink(spooled.path)

    def close(self) -> None:
        """Delete every spooled file; later requests for files raise :class:`FileStoreClosedError`."""
        with self._lock:
            self._closed = True
            self._spooled.clear()
            cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            cleanup()

    def _get(self, key: str, build: Callable[[str], None], cap: int | None) -> SpooledFile:
        with self._lock:
            ready = self._ready(key)
            if ready is not None:
                return ready
            building = self._building.setdefault(key, threading.Lock())
            directory = self._spool_directory()
        # One builder per file; concurrent first downloads of the same file wait for it.
        with building:
            with self._lock:
                ready = self._ready(key)
                if ready is not None:
                    return ready
            path = os.path.join(directory, key)
            partial = f"{path}.partial"
            try:
                build(partial)
                size = os.path.getsize(partial)
                if cap is not None and size > cap:
                    raise FileTooLargeError(cap)
                os.replace(partial, path)
            except FileTooLargeError:
                with self._lock:
                    self._too_large.add(key)
                raise
            except OSError:
                with self._lock:
                    self._check_open()  # the directory went away under a stop: say so
                raise
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
            spooled = SpooledFile(path, size)
            with self._lock:
                self._check_open()
                self._spooled[key] = spooled
                self._building.pop(key, None)
            return spooled

    def _ready(self, key: str) -> SpooledFile | None:
        # With the lock held: the spooled file, None if it must be built, or why it never will be.
        self._check_open()
        if key in self._too_large:
            raise FileTooLargeError(self._max_file_bytes)
        return self._spooled.get(key)

    def _build(self, path: str, content: FileContent) -> None:
        with open(path, "wb", buffering=_WRITE_BUFFER) as out:
            cap = self._max_file_bytes

            def stop_when_too_large() -> None:
                # Cheap early exit: a file over the cap is never served, so stop writing it.
                if out.tell() > cap:
                    raise FileTooLargeError(cap)

            write_file(out, content, stop_when_too_large)

    def _spool_directory(self) -> str:
        # Called with the lock held; created on first use so idle simulators touch no disk.
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="aqua-simulator-files-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._directory, ignore_errors=True)
        return self._directory

    def _check_open(self) -> None:
        if self._closed:
            raise FileStoreClosedError("the simulator is stopping")


def _gzip_copy(source: str, target: str) -> None:
    with open(source, "rb") as data, open(target, "wb", buffering=_WRITE_BUFFER) as out:
        with gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=_TRANSPORT_GZIP_LEVEL, mtime=0) as packed:
            shutil.copyfileobj(data, packed, _COPY_CHUNK)
