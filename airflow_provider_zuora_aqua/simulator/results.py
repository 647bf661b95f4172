"""Deterministic result files: the same query always yields the same rows, written as a stream.

A file has one header line, then data rows ``first_row`` to ``first_row + rows - 1``. Cell
values are ``<field>-<row:06d>`` (``Id-000001``). Two kinds of rows give clients something to
get right:

* every seventh row holds :data:`QUOTED_VALUE` (a comma, double quotes and a newline, so RFC
  4180 quoting) in its text column: the second column, or the only one. Counting lines is
  therefore not counting records.
* every tenth row leaves its last column null (when there are several), rendered as the job's
  ``nullReplacement`` or an empty cell; where both fall on one cell, null wins.

Rows are rendered from one ``str.format`` template per row kind and written in blocks, so a
file of millions of rows is written at disk speed in constant memory.

A query on an object that has a table in the simulator's tenant (:mod:`.tenant`) carries its
rows instead (``FileContent.table_rows``): the same header, the rows' own cells (null cells as
the ``nullReplacement``), and the ``deleted`` column when the submit asked for one: first, named
``<Object>.<column>`` (``Account.IsDeleted``), as in Zuora's own examples.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from .zoql import ParsedQuery

MAX_RECORDS = 1000
QUOTED_VALUE = 'a "quoted", multi-line\nvalue'
_QUOTED_EVERY = 7
_NULL_EVERY = 10
_PERIOD = _QUOTED_EVERY * _NULL_EVERY
_ROW_PLACEHOLDER = "{0:06d}"
_BLOCK_ROWS = 16_384
# Fast compression: a simulator's file of a gigabyte should not take minutes to build.
_GZIP_LEVEL = 1
# Fixed timestamps keep gzip and zip bytes identical from one run to the next.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")

CSV_CONTENT_TYPE = "text/csv;charset=UTF-8"
GZIP_CONTENT_TYPE = "application/x-gzip;charset=UTF-8"
ZIP_CONTENT_TYPE = "application/zip;charset=UTF-8"


@dataclass(frozen=True)
class FileContent:
    """What a result file holds: the rows of one batch, or of one segment of it.

    ``part`` is the 1-based segment number (None for a whole batch's file).
    """

    batch_name: str
    parsed: ParsedQuery
    first_row: int
    rows: int
    file_format: str
    use_query_labels: bool
    null_replacement: str | None
    part: int | None = None
    #: The cells of a table's rows (None for null), instead of generated rows; ``rows`` and
    #: ``first_row`` are ignored then.
    table_rows: tuple[tuple[str | None, ...], ...] | None = None
    #: Header cells before the select list's (the ``deleted`` column, first as Zuora writes it).
    leading_header: tuple[str, ...] = ()

    @property
    def base_name(self) -> str:
        """The file name without extension: the batch name, made safe, plus the segment number."""
        base = _UNSAFE_FILENAME.sub("_", self.batch_name) or "result"
        return base if self.part is None else f"{base}_{self.part}"

    @property
    def filename(self) -> str:
        """The file name the download suggests (``Content-Disposition``)."""
        extension = {"gzip": ".csv.gz", "zip": ".zip"}.get(self.file_format, ".csv")
        return f"{self.base_name}{extension}"

    @property
    def content_type(self) -> str:
        """The media type Zuora sends for the job's format, always with a charset."""
        return {"gzip": GZIP_CONTENT_TYPE, "zip": ZIP_CONTENT_TYPE}.get(self.file_format, CSV_CONTENT_TYPE)


def record_count(query: str) -> int:
    """The number of rows a query returns: 1 to 1000, derived from its text."""
    return 1 + int(hashlib.sha256(query.encode("utf-8")).hexdigest()[:8], 16) % MAX_RECORDS


def header(parsed: ParsedQuery, use_query_labels: bool) -> list[str]:
    """The CSV header.

    With ``useQueryLabels`` Zuora writes "object and field API names ... instead of the field
    labels": each field of the queried object qualified with it (``Account.Name``), a joined
    one as written (``Account.Name`` in a Subscription query). Without it Zuora writes display
    labels (``Account: Account Balance``), which the simulator does not know: it writes the
    select list's names as written (``Balance``).
    """
    if not use_query_labels:
        return list(parsed.fields)
    return [field if "." in field else f"{parsed.object_name}.{field}" for field in parsed.fields]


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _row_templates(fields: tuple[str, ...], null_replacement: str | None) -> list[str]:
    """One format template per ``row % 70``; ``template.format(row)`` is that row's CSV line."""
    last = len(fields) - 1
    text_column = 1 if last > 0 else 0
    # Field names are identifiers (no braces); a null replacement is user text and may hold some.
    null = (null_replacement or "").replace("{", "{{").replace("}", "}}")
    templates = []
    for phase in range(_PERIOD):
        cells = [f"{field}-{_ROW_PLACEHOLDER}" for field in fields]
        if phase % _QUOTED_EVERY == 0:
            cells[text_column] = QUOTED_VALUE
        if last > 0 and phase % _NULL_EVERY == 0:
            cells[last] = null
        templates.append(_csv_line(cells))
    return templates


def write_csv(out: BinaryIO, content: FileContent, after_block: Callable[[], None] | None = None) -> None:
    """Write the CSV of ``content`` to ``out``, calling ``after_block`` after each block of rows."""
    cells = list(content.leading_header) + header(content.parsed, content.use_query_labels)
    out.write(_csv_line(cells).encode("utf-8"))
    if content.table_rows is not None:
        _write_table_rows(out, content.table_rows, content.null_replacement or "", after_block)
        return
    templates = _row_templates(content.parsed.fields, content.null_replacement)
    end = content.first_row + content.rows
    for start in range(content.first_row, end, _BLOCK_ROWS):
        block = range(start, min(start + _BLOCK_ROWS, end))
        out.write("".join([templates[row % _PERIOD].format(row) for row in block]).encode("utf-8"))
        if after_block is not None:
            after_block()


def _write_table_rows(
    out: BinaryIO,
    rows: tuple[tuple[str | None, ...], ...],
    null: str,
    after_block: Callable[[], None] | None,
) -> None:
    for start in range(0, len(rows), _BLOCK_ROWS):
        block = rows[start : start + _BLOCK_ROWS]
        out.write("".join(_csv_line([null if cell is None else cell for cell in row]) for row in block).encode("utf-8"))
        if after_block is not None:
            after_block()


def csv_size_bound(content: FileContent) -> int:
    """An upper bound of the CSV's size in bytes, computed without writing it."""
    if content.table_rows is not None:
        # Every character as four UTF-8 bytes, quoted and doubled: generous, and cheap.
        cells = sum(len(cell or content.null_replacement or "") + 3 for row in content.table_rows for cell in row)
        return 8 * cells + 1024 * (1 + len(content.leading_header) + len(content.parsed.fields))
    last_row = content.first_row + content.rows - 1
    templates = _row_templates(content.parsed.fields, content.null_replacement)
    longest_row = max(len(template.format(max(last_row, 0)).encode("utf-8")) for template in templates)
    header_line = _csv_line(header(content.parsed, content.use_query_labels)).encode("utf-8")
    return len(header_line) + longest_row * content.rows


def write_file(out: BinaryIO, content: FileContent, after_block: Callable[[], None] | None = None) -> None:
    """Write the downloadable file in the job's format (``csv``, ``gzip`` or ``zip``) to ``out``.

    ``out`` must be seekable for ``zip`` (its local header is completed after the data).
    """
    if content.file_format == "gzip":
        # filename="" keeps the spool file's own name out of the gzip header.
        with gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as packed:
            write_csv(packed, content, after_block)  # type: ignore[arg-type]
        return
    if content.file_format == "zip":
        member = zipfile.ZipInfo(f"{content.base_name}.csv", date_time=_ZIP_DATE)
        member.compress_type = zipfile.ZIP_DEFLATED
        zip64 = csv_size_bound(content) * 1.05 > zipfile.ZIP64_LIMIT
        with zipfile.ZipFile(out, "w") as archive, archive.open(member, "w", force_zip64=zip64) as packed:
            write_csv(packed, content, after_block)  # type: ignore[arg-type]
        return
    write_csv(out, content, after_block)
