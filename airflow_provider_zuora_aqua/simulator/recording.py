"""The request log: what clients sent and what they were answered, minus secrets."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

# Never kept in the log: these carry tokens, client secrets or session cookies.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator saw it.

    ``route`` is one of ``token``, ``submit``, ``get_job``, ``delete_job``,
    ``stateful_last_job``, ``file``, ``unknown``. ``status`` is None when no answer
    was sent (faults ``drop`` and ``lost_answer``); ``fault`` is the injected fault kind, if
    any; ``json`` is the decoded body of a submit request (None otherwise; the token form body
    is never stored).
    """

    time: float
    method: str
    path: str
    query: str
    route: str
    headers: dict[str, str]
    status: int | None
    fault: str | None
    json: Any


def public_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` without the ones that carry credentials."""
    return {name: value for name, value in headers.items() if name.lower() not in SECRET_HEADERS}


class RequestLog:
    """Thread-safe request log that keeps arrival order even when answers finish out of order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sequence = itertools.count()
        self._entries: list[tuple[int, RecordedRequest]] = []

    def ticket(self) -> int:
        """A position in arrival order, taken when a request arrives."""
        with self._lock:
            return next(self._sequence)

    def add(self, ticket: int, entry: RecordedRequest) -> None:
        """Store a finished request at the position it arrived in."""
        with self._lock:
            self._entries.append((ticket, entry))

    def snapshot(self) -> list[RecordedRequest]:
        """A copy of the log, in arrival order."""
        with self._lock:
            entries = sorted(self._entries, key=lambda pair: pair[0])
        return [entry for _, entry in entries]

    def clear(self) -> None:
        """Forget every request recorded so far."""
        with self._lock:
            self._entries.clear()
