"""What the simulator answers, before it goes on the wire."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
# Zuora gzips answers over this many bytes for clients that accept it.
GZIP_THRESHOLD = 1000


@dataclass(frozen=True)
class FileBody:
    """A body read from disk: ``length`` bytes of ``path`` from ``offset``."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True)
class Reply:
    """A response: status, body bytes (or a file on disk), media type and extra headers.

    ``compressible`` marks JSON answers, which Zuora gzips over 1000 bytes for clients
    sending ``Accept-Encoding: gzip``; result files decide their own encoding. ``file``
    replaces ``body`` for result files, which are streamed from disk.
    """

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    compressible: bool = False
    file: FileBody | None = None

    @property
    def length(self) -> int:
        """The number of body bytes (before any transport compression of JSON)."""
        return self.file.length if self.file is not None else len(self.body)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, JSON_CONTENT_TYPE, headers or {}, compressible=True)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header value accepts gzip (``q=0`` refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() != "gzip":
            continue
        quality = params.strip().lower()
        return not (quality.startswith("q=") and _zero(quality[2:]))
    return False


def _zero(quality: str) -> bool:
    try:
        return float(quality) == 0.0
    except ValueError:
        return False
