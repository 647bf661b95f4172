"""Count the CSV records of an AQuA result file while it streams, in csv, gzip or zip.

A record is not a line: RFC 4180 lets a quoted field hold commas, doubled quotes and line
breaks. :class:`CsvRecordCounter` is fed byte chunks of any size (one byte works too) and keeps
the in-quotes state across chunk boundaries. It never walks characters in Python: each chunk is
split on quotes, the parts outside quotes are counted with ``bytes.count``, so it runs at memory
speed.

Rules: a line break outside quotes (``\\n`` or ``\\r\\n``) ends a record; blank lines are not
records; the last record needs no line break; the first record is the header and is not
counted. A file that ends inside a quoted field is malformed. Where these rules and Python's
``csv`` module could disagree, the file is refused as malformed rather than miscounted: a bare
``\\r`` line end, a quote inside an unquoted field, or text after a closing quote.

Compressed files are decompressed within bounds (:data:`MAX_INFLATE_RATIO`,
:data:`INFLATE_ALLOWANCE`, :data:`MAX_ZIP_MEMBERS`), and a zip whose entries overlap is refused:
a bomb fails in well under a second instead of inflating gigabytes.
"""

from __future__ import annotations

import re
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
#: Most decompressed bytes per compressed byte of a gzip file or a zip member (CSV rarely passes 20).
MAX_INFLATE_RATIO = 200
#: Decompressed bytes always allowed, whatever the ratio (a small file may compress very well).
INFLATE_ALLOWANCE = 64 * 1024 * 1024
#: Most members of a zip file (an AQuA zip holds one CSV).
MAX_ZIP_MEMBERS = 1000
_GZIP_WBITS = 31  # zlib: gzip header and trailer, CRC-32 and length checked


class MalformedResultError(ValueError):
    """The stored bytes are not a complete file of their format (cut short, corrupt, not CSV)."""


class RecordCounter(Protocol):
    """Counts records from the stored bytes of a file, fed in order."""

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> int: ...


class CsvRecordCounter:
    """
    Count the data records of a CSV stream (header excluded), fed in chunks of any size.

    :param agree_with_csv: refuse what Python's ``csv`` module would count otherwise (see the
        module docs). Needed when no ``recordCount`` checks the count; it costs a few
        milliseconds per MiB of quoted fields.
    """

    def __init__(self, *, agree_with_csv: bool = True) -> None:
        self._in_quotes = False
        self._line_has_content = False
        self._lines = 0
        self._check = _CsvModuleAgreement() if agree_with_csv else None

    def feed(self, data: bytes) -> None:
        """Count the records completed by ``data``."""
        if not data:
            return
        if self._check is not None:
            self._check.feed(data)
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


class _CsvModuleAgreement:
    """
    Refuse what :class:`CsvRecordCounter` would count otherwise than Python's ``csv`` module:
    a bare ``\\r`` outside quotes (``csv`` ends a record there), a quote inside an unquoted
    field (``csv`` keeps it as text), and text after a closing quote other than a delimiter or
    a line end.

    In C, per chunk: every byte but ``" , \\r \\n`` becomes ``x``, every quoted field (one that
    is closed) becomes ``Q``; what is left must not hold ``xQ``, ``Qx`` or a ``\\r`` before
    anything but ``\\n``, and a quote left over must open a field that the chunk ends inside
    (found with ``in`` and ``count``, not a scanning regex: about 1 ms per MiB).
    The state between chunks is a few bytes put before the next chunk.
    """

    def __init__(self) -> None:
        self._before = _NEWLINE  # a file starts at a line start

    def feed(self, data: bytes) -> None:
        if _QUOTE not in data and _CR not in data and self._before[-1:] not in (_QUOTE, _CR):
            if self._before != _OPEN_FIELD:  # else inside a quoted field all along
                self._before = data.translate(_SHAPE)[-1:]
            return
        shape = _QUOTED_FIELD.sub(b"Q", self._before + data.translate(_SHAPE))
        open_at = shape.find(_QUOTE)
        settled = shape if open_at < 0 else shape[: open_at + 1]
        if b"xQ" in settled or (open_at >= 0 and shape[open_at - 1 : open_at] not in (_COMMA, _NEWLINE)):
            raise MalformedResultError(_DISAGREES + "a quote inside an unquoted field")
        if b"Qx" in settled:
            raise MalformedResultError(_DISAGREES + "text after a closing quote")
        if settled.count(_CR) - settled.count(b"\r\n") > settled.endswith(_CR):
            raise MalformedResultError(_DISAGREES + "a bare carriage return (\\r) ends a line")
        if open_at >= 0 and not _OPEN_QUOTED_FIELD.fullmatch(shape, open_at):
            raise MalformedResultError(_DISAGREES + "a quote inside an unquoted field")
        if open_at >= 0:
            self._before = _OPEN_FIELD
        elif shape.endswith(b"Q"):
            self._before = _OPEN_FIELD + _QUOTE  # closed, unless the next chunk starts with a quote ("" inside)
        else:
            self._before = shape[-1:]


_SHAPE = bytes(byte if byte in _QUOTE + _COMMA + _CR + _NEWLINE else ord("x") for byte in range(256))
#: A closed quoted field (doubled quotes inside), not followed by another quote.
_QUOTED_FIELD = re.compile(rb'"[^"]*(?:""[^"]*)*"(?!")')
_OPEN_QUOTED_FIELD = re.compile(rb'"[^"]*(?:""[^"]*)*')
_OPEN_FIELD = b',"x'
_DISAGREES = "its CSV is not counted, as readers would disagree on its records: "


class _InflateBound:
    """The decompression bound of one compressed stream: :data:`MAX_INFLATE_RATIO`, past :data:`INFLATE_ALLOWANCE`."""

    def __init__(self, what: str) -> None:
        self._what = what
        self.compressed = 0
        self.decompressed = 0

    def check(self, compressed: int, decompressed: int) -> None:
        self.compressed += compressed
        self.decompressed += decompressed
        if self.decompressed > max(INFLATE_ALLOWANCE, MAX_INFLATE_RATIO * self.compressed):
            raise MalformedResultError(
                f"{self._what} inflates past {MAX_INFLATE_RATIO} times its compressed size "
                f"({self.decompressed} bytes from {self.compressed}): a decompression bomb, not an AQuA result"
            )


class GzipRecordCounter:
    """Count the CSV records of a gzip stream, decompressing as it goes (multi-member safe), within bounds."""

    def __init__(self, *, agree_with_csv: bool = True) -> None:
        self._csv = CsvRecordCounter(agree_with_csv=agree_with_csv)
        self._inflate = zlib.decompressobj(_GZIP_WBITS)
        self._seen_data = False
        self._bound = _InflateBound("the gzip data")

    def feed(self, data: bytes) -> None:
        """Decompress ``data`` in bounded pieces and count them."""
        self._seen_data = self._seen_data or bool(data)
        self._bound.check(len(data), 0)
        while True:
            try:
                out = self._inflate.decompress(data, _MAX_INFLATE_CHUNK)
            except zlib.error as exc:
                raise MalformedResultError(f"the gzip data is corrupt: {exc}") from None
            self._bound.check(0, len(out))
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


def record_counter(file_format: str, *, agree_with_csv: bool = True) -> RecordCounter | None:
    """The streaming counter of a format; ``None`` for zip, which is counted from the complete file."""
    if file_format == CSV:
        return CsvRecordCounter(agree_with_csv=agree_with_csv)
    if file_format == GZIP:
        return GzipRecordCounter(agree_with_csv=agree_with_csv)
    if file_format == ZIP:
        return None
    raise ValueError(f"unknown AQuA file format {file_format!r}; expected one of {', '.join(FORMATS)}")


def count_zip_records(
    file: str | PathLike[str] | BinaryIO, *, chunk_size: int = _MAX_INFLATE_CHUNK, agree_with_csv: bool = True
) -> int:
    """
    Count the CSV records of every member of a zip file, streaming each member.

    Zip needs seeking (its directory is at the end), so this reads a complete local file.
    Each member is a CSV with its own header; their records add up. Refused before any
    member is inflated: more than :data:`MAX_ZIP_MEMBERS` entries (counted from the end
    record, before the directory is read into memory) and entries whose data overlap; while
    inflating, each member is held to :data:`MAX_INFLATE_RATIO` past :data:`INFLATE_ALLOWANCE`.
    """
    records = 0
    try:
        with zipfile.ZipFile(_few_members(file)) as archive:
            members = [member for member in archive.infolist() if not member.is_dir()]
            _refuse_overlaps(archive.infolist(), archive.start_dir)
            for member in members:
                counter = CsvRecordCounter(agree_with_csv=agree_with_csv)
                bound = _InflateBound(f"zip member {member.filename!r}")
                bound.check(member.compress_size, 0)
                with archive.open(member) as stream:
                    while chunk := stream.read(chunk_size):
                        bound.check(0, len(chunk))
                        counter.feed(chunk)
                records += counter.finish()
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise MalformedResultError(f"the zip file is corrupt or unsupported: {exc}") from None
    return records


def _few_members(file: str | PathLike[str] | BinaryIO) -> str | PathLike[str] | BinaryIO:
    """``file``, once its end record says it has at most :data:`MAX_ZIP_MEMBERS` entries."""
    if isinstance(file, (str, PathLike)):
        with open(file, "rb") as handle:
            _few_members(handle)
        return file
    end = zipfile._EndRecData(file)  # type: ignore[attr-defined]  # the stdlib's own reader of the end record
    if end is None:
        raise MalformedResultError("the zip file is corrupt or unsupported: no end of central directory")
    entries = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    if entries > MAX_ZIP_MEMBERS:
        raise MalformedResultError(f"the zip file has {entries} entries, more than {MAX_ZIP_MEMBERS}")
    file.seek(0)
    return file


def _refuse_overlaps(entries: list[zipfile.ZipInfo], directory_start: int) -> None:
    """Each entry's data must end before the next entry (or the directory) starts: no shared bytes."""
    ordered = sorted(entries, key=lambda entry: entry.header_offset)
    ends = [entry.header_offset for entry in ordered[1:]] + [directory_start]
    for entry, next_start in zip(ordered, ends):
        # The local header is at least 30 bytes; then come the name and the compressed data.
        if entry.header_offset + 30 + entry.compress_size > next_start:
            raise MalformedResultError(
                f"the zip file's entries overlap ({entry.filename!r} runs into the next entry): a zip bomb"
            )


def sniff_format(head: bytes) -> str:
    """The format that the first bytes of a file show: gzip and zip by their magic numbers, else csv."""
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return ZIP
    return CSV
