"""Deterministic result files: the same query always yields the same rows.

A batch's file has ``recordCount`` data rows under one header line. Cell values are
``<field>-<row:06d>`` (``Id-000001``); every tenth row leaves its last column null (when
there are several), rendered as the job's ``nullReplacement`` or an empty cell, so the
option has something to act on.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass

from .zoql import ParsedQuery

MAX_RECORDS = 1000
_NULL_EVERY = 10
# Fixed timestamps keep gzip and zip bytes identical from one download to the next.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ResultFile:
    """A downloadable file: its bytes, media type and suggested file name."""

    content: bytes
    content_type: str
    filename: str


def record_count(query: str) -> int:
    """The number of rows a query returns: 1 to 1000, derived from its text."""
    return 1 + int(hashlib.sha256(query.encode("utf-8")).hexdigest()[:8], 16) % MAX_RECORDS


def header(parsed: ParsedQuery, use_query_labels: bool) -> list[str]:
    """The CSV header.

    Plain select-list names by default; with ``useQueryLabels`` (API names) each field of
    the queried object is qualified with it (``Account.Name``), as the field's full name.
    """
    if not use_query_labels:
        return list(parsed.fields)
    return [field if "." in field else f"{parsed.object_name}.{field}" for field in parsed.fields]


def csv_bytes(parsed: ParsedQuery, rows: int, use_query_labels: bool, null_replacement: str | None) -> bytes:
    """The CSV text of a batch with ``rows`` data rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header(parsed, use_query_labels))
    last = len(parsed.fields) - 1
    null = null_replacement or ""
    for row in range(1, rows + 1):
        values = [f"{field}-{row:06d}" for field in parsed.fields]
        if last > 0 and row % _NULL_EVERY == 0:
            values[last] = null
        writer.writerow(values)
    return buffer.getvalue().encode("utf-8")


def package(batch_name: str, data: bytes, file_format: str) -> ResultFile:
    """Wrap CSV bytes in the job's format: ``csv``, ``gzip`` or ``zip``."""
    base = _UNSAFE_FILENAME.sub("_", batch_name) or "result"
    if file_format == "gzip":
        return ResultFile(gzip.compress(data, mtime=0), "application/x-gzip", f"{base}.csv.gz")
    if file_format == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(zipfile.ZipInfo(f"{base}.csv", date_time=_ZIP_DATE), data, zipfile.ZIP_DEFLATED)
        return ResultFile(buffer.getvalue(), "application/zip", f"{base}.zip")
    return ResultFile(data, "text/csv; charset=utf-8", f"{base}.csv")
