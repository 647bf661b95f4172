"""What the simulator answers, before it goes on the wire."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Reply:
    """A response: status, body bytes, media type and extra headers.

    ``compressible`` marks JSON answers, which Zuora gzips over 1000 bytes for clients
    sending ``Accept-Encoding: gzip``; result files are sent as they are.
    """

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    compressible: bool = False


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, JSON_CONTENT_TYPE, headers or {}, compressible=True)
