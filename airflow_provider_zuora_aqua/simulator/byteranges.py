"""The ``Range`` request header, for resumable downloads (RFC 9110, a single byte range)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE_RANGE = re.compile(r"\s*bytes\s*=\s*(?P<first>\d*)\s*-\s*(?P<last>\d*)\s*", re.IGNORECASE)


class UnsatisfiableRangeError(ValueError):
    """The range starts at or past the end of the file: answered ``416``."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a file of ``size`` bytes, both ends included."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` header of a ``206`` answer."""
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range ``header`` asks for in a file of ``size`` bytes; None to send the whole file.

    ``bytes=N-``, ``bytes=N-M`` and ``bytes=-K`` are honoured. A missing or malformed header,
    another unit, or several ranges are ignored (the whole file is sent, as RFC 9110 allows).
    Raise :class:`UnsatisfiableRangeError` when no byte of the range exists.
    """
    if header is None:
        return None
    found = _SINGLE_RANGE.fullmatch(header)
    if found is None:
        return None
    first, last = found.group("first"), found.group("last")
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise UnsatisfiableRangeError(header)
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise UnsatisfiableRangeError(header)
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end, size)
