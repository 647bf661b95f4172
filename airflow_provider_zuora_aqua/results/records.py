"""Count the CSV records of an AQuA result file while it streams, in csv, gzip or zip.

A record is not a line: RFC 4180 lets a quoted field hold commas, doubled quotes and line
breaks. :class:`CsvRecordCounter` is fed byte chunks of any size (one byte works too) and keeps
the in-quotes state across chunk boundaries. It never walks characters in Python: each chunk is
split on quotes, the parts outside quotes are counted with ``bytes.count``, so it runs at memory
speed.

Rules: a line break outside quotes (``\\n`` or ``\\r\\n``) ends a record; blank lines are not
records; the last record needs no line break; the first record is the header and is not
counted. A file that ends inside a quoted field is malformed.
"""

from __future__ import annotations

import zipfile
import zlib
from os import PathLike
from typing import BinaryIO, Protocol

from airflow_provider_zuora_aqua.jobs.request import CSV, FORMATS, GZIP, ZIP

_QUOTE = b'"'
_NEWLINE = b"\n"
_BLANK_LINE = b"\n\n"
_COMMA = b","
_CR = b"\r"
_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in _QUOTE + _COMMA + _CR + _NEWLINE)
#: Largest piece of decompressed data held at once, whatever the compression ratio.
_MAX_INFLATE_CHUNK = 1024 * 1024
_GZIP_WBITS = 31  # zlib: gzip header and trailer, CRC-32 and length checked


class MalformedResultError(ValueError):
    """The stored bytes are not a complete file of their format (cut short, corrupt, not CSV)."""


class RecordCounter(Protocol):
    """Counts records from the stored bytes of a file, fed in order."""

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> int: ...


class CsvRecordCounter:
    """Count the data records of a CSV stream (header excluded), fed in chunks of any size."""

    def __init__(self) -> None:
        self._in_quotes = False
        self._line_has_content = False
        self._lines = 0

    def feed(self, data: bytes) -> None:
        """Count the records completed by ``data``."""
        if not data:
            return
        # Only quotes, commas and line ends matter now. A blank line shows as two line feeds
        # together; so does a line without comma or quote (a one-column file): both take the
        # exact path, the rest (any multi-column CSV) never pays for telling them apart.
        kept = data.translate(None, _NOT_STRUCTURE)
        if _CR in kept:
            kept = kept.replace(_CR, b"")
        if _BLANK_LINE in kept or (not self._line_has_content and kept[:1] == _NEWLINE):
            self._feed_exact(data)
            return
        # Adjacent quotes toggle the state twice around no line feed, so they cancel: what is
        # left has a quote only where a quoted field spans lines, and is tiny.
        marks = kept.replace(_COMMA, b"").replace(_QUOTE + _QUOTE, b"")
        if _QUOTE not in marks:
            if not self._in_quotes:
                self._lines += len(marks)
                self._line_has_content = self._tail_has_content(data)
            return
        pieces = marks.split(_QUOTE)
        quoted = pieces[0::2] if self._in_quotes else pieces[1::2]
        self._lines += len(marks) - (len(pieces) - 1) - sum(map(len, quoted))
        if len(pieces) % 2 == 0:
            self._in_quotes = not self._in_quotes
        # After the last line feed: an odd number of quotes means that line feed was quoted,
        # so the current line has an open quote before it, which is content.
        after_last_lf = len(marks) - 1 - marks.rfind(_NEWLINE)
        self._line_has_content = self._in_quotes or after_last_lf % 2 == 1 or self._tail_has_content(data)

    def finish(self) -> int:
        """Return the number of data records; the stream is complete."""
        if self._in_quotes:
            raise MalformedResultError("the CSV data ends inside a quoted field: the file is cut short or malformed")
        lines = self._lines + (1 if self._line_has_content else 0)
        return max(0, lines - 1)

    def _tail_has_content(self, data: bytes) -> bool:
        """Whether the line open at the end of ``data`` (outside quotes) has content."""
        last_lf = data.rfind(_NEWLINE)
        if last_lf < 0:
            return self._line_has_content or bool(data.strip(_CR))
        return bool(data[last_lf + 1 :].strip(_CR))

    def _feed_exact(self, data: bytes) -> None:
        """The general path, that also tells blank lines apart."""
        pieces = data.split(_QUOTE)
        # Pieces alternate outside/inside quotes; a doubled quote is an empty piece, so it keeps
        # the state. Each quoted stretch becomes one quote character: content, never a newline.
        outside = _QUOTE.join(pieces[1::2] if self._in_quotes else pieces[0::2])
        if self._in_quotes and len(pieces) > 1:
            outside = _QUOTE + outside
        if len(pieces) % 2 == 0:  # an odd number of quotes flips the state
            self._in_quotes = not self._in_quotes
        if self._in_quotes and len(pieces) > 1:
            outside += _QUOTE
        self._count_outside(outside)

    def _count_outside(self, text: bytes) -> None:
        """Count the non-blank lines ended in ``text``, which holds no quoted data."""
        if _CR in text:
            text = text.replace(_CR, b"")
        if not text:
            return
        newlines = text.count(_NEWLINE)
        if newlines == 0:
            self._line_has_content = True
            return
        blank = 0 if self._line_has_content or text[0] != _NEWLINE[0] else 1
        if _BLANK_LINE in text:
            blank += text.split(_NEWLINE)[1:-1].count(b"")
        self._lines += newlines - blank
        self._line_has_content = text[-1] != _NEWLINE[0]


class GzipRecordCounter:
    """Count the CSV records of a gzip stream, decompressing as it goes (multi-member safe)."""

    def __init__(self) -> None:
        self._csv = CsvRecordCounter()
        self._inflate = zlib.decompressobj(_GZIP_WBITS)
        self._seen_data = False

    def feed(self, data: bytes) -> None:
        """Decompress ``data`` in bounded pieces and count them."""
        self._seen_data = self._seen_data or bool(data)
        while True:
            try:
                out = self._inflate.decompress(data, _MAX_INFLATE_CHUNK)
            except zlib.error as exc:
                raise MalformedResultError(f"the gzip data is corrupt: {exc}") from None
            self._csv.feed(out)
            if self._inflate.eof:
                # A new gzip member may follow (concatenated gzip files are one valid file).
                data = self._inflate.unused_data
                self._inflate = zlib.decompressobj(_GZIP_WBITS)
                self._seen_data = bool(data)
                if not data:
                    return
                continue
            data = self._inflate.unconsumed_tail
            if not data and len(out) < _MAX_INFLATE_CHUNK:
                return

    def finish(self) -> int:
        """Return the data records; fail if the last gzip member is cut short."""
        if self._seen_data:
            raise MalformedResultError("the gzip data is cut short (no end of stream)")
        return self._csv.finish()


def record_counter(file_format: str) -> RecordCounter | None:
    """The streaming counter of a format; ``None`` for zip, which is counted from the complete file."""
    if file_format == CSV:
        return CsvRecordCounter()
    if file_format == GZIP:
        return GzipRecordCounter()
    if file_format == ZIP:
        return None
    raise ValueError(f"unknown AQuA file format {file_format!r}; expected one of {', '.join(FORMATS)}")


def count_zip_records(file: str | PathLike[str] | BinaryIO, *, chunk_size: int = _MAX_INFLATE_CHUNK) -> int:
    """
    Count the CSV records of every member of a zip file, streaming each member.

    Zip needs seeking (its directory is at the end), so this reads a complete local file.
    Each member is a CSV with its own header; their records add up.
    """
    records = 0
    try:
        with zipfile.ZipFile(file) as archive:
            for member in archive.infolist():
                if member.is_dir():
                    continue
                counter = CsvRecordCounter()
                with archive.open(member) as stream:
                    while chunk := stream.read(chunk_size):
                        counter.feed(chunk)
                records += counter.finish()
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise MalformedResultError(f"the zip file is corrupt or unsupported: {exc}") from None
    return records


def sniff_format(head: bytes) -> str:
    """The format that the first bytes of a file show: gzip and zip by their magic numbers, else csv."""
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return ZIP
    return CSV
