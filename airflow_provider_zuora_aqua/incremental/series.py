"""
What a destination holds for a query: one series of windows, all of one query.

Each window manifest records the query as submitted without its window (the user's text, the
cursor, the ``deleted`` option, the format) and a fingerprint of them. A run reads it back
before anything is sent: windows of another query in the same folder would make the watermark
a lie (a filter widened after its windows were exported leaves records behind that the mark has
passed; two DAGs with different queries on one destination take turns moving one mark).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError


@dataclass(frozen=True)
class Series:
    """The query a series of windows was exported with (whitespace outside quotes does not count)."""

    query: str
    cursor: str
    deleted: Mapping[str, Any] | None
    format: str

    @classmethod
    def of(cls, query: str, cursor: str, deleted: Mapping[str, Any] | None, file_format: str) -> Series:
        return cls(_normalized(query), cursor, dict(deleted) if deleted else None, file_format)

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``series`` field."""
        return {**asdict(self), "fingerprint": self.fingerprint}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Series | None:
        """The series a manifest records; None for one written before manifests recorded it."""
        series = manifest.get("series")
        if not isinstance(series, Mapping):
            return None
        deleted = series.get("deleted")
        return cls(
            str(series.get("query")),
            str(series.get("cursor")),
            dict(deleted) if isinstance(deleted, Mapping) else None,
            str(series.get("format")),
        )

    def describe(self) -> str:
        deleted = f", deleted {dict(self.deleted)}" if self.deleted else ""
        return f"{self.query!r} on {self.cursor}, format {self.format}{deleted} ({self.fingerprint[:19]})"


def check_same_series(held: Series, asked: Series, *, query_name: str, folder_uri: str) -> None:
    """Refuse, before anything is sent, a run whose query is not the one the folder's windows were exported with."""
    if held == asked:
        return
    raise AquaConfigurationError(
        f"queries[{query_name!r}]: {folder_uri} holds windows exported with another query than this run's.\n"
        f"  in the destination: {held.describe()}\n"
        f"  this run:           {asked.describe()}\n"
        "Exporting on would leave records behind the watermark or mix two queries in one series. Ways out: "
        "give the export another destination; or give the query another name (its own folder, exported from "
        f"start); or, to export everything again with the new query, remove {folder_uri} first."
    )


def _normalized(query: str) -> str:
    """The query with runs of whitespace outside quoted literals made one space, and its ends trimmed."""
    out: list[str] = []
    quote: str | None = None
    pending_space = escaped = False
    for char in query.strip():
        if quote is None and char.isspace():
            pending_space = True
            continue
        if pending_space:
            out.append(" ")
            pending_space = False
        out.append(char)
        if escaped:
            escaped = False
        elif quote is not None and char == "\\":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    return "".join(out)
