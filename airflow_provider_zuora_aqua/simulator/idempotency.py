"""``Idempotency-Key`` on submits: the first answer to a key is saved and replayed.

As Zuora documents it: the status, headers and body of the first request with a key are
saved, success or failure, and every later request with the same key and the same body gets
them back (the same job, no new one). While the first request is still being processed the
key answers ``409``; the same key with another body answers ``422``. A key is forgotten
``seconds`` after it was set. Per-request headers (``Zuora-Request-Id``, the echoed track
id) are added when each answer is sent, so they are fresh on every replay.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from . import errors
from .errors import general_error
from .replies import Reply, json_reply

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


@dataclass
class _Entry:
    fingerprint: str
    set_at: float
    reply: Reply | None = None  # None while the first request is in flight


def fingerprint(body: bytes) -> str:
    """What makes two submit bodies "the same request": their JSON, compared canonically."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode("utf-8")
    except ValueError:
        canonical = body  # not JSON: only the very same bytes are the same request
    return hashlib.sha256(canonical).hexdigest()


def key_error(key: str) -> Reply | None:
    """The ``400`` for a key Zuora would refuse, None for a good one."""
    if not key.strip():
        return json_reply(400, general_error(errors.GENERAL_INVALID_VALUE, f"The {HEADER} header is empty."))
    if len(key) > MAX_KEY_LENGTH:
        message = f"The {HEADER} header must be at most {MAX_KEY_LENGTH} characters long, not {len(key)}."
        return json_reply(400, general_error(errors.GENERAL_INVALID_VALUE, message))
    return None


class IdempotencyStore:
    """Saved answers by key; thread-safe.

    :param seconds: how long a key's saved answer is kept, from the first request with it.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._lock = threading.Lock()
        # Keys in the order they were set, so expired ones are trimmed from the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def claim(self, key: str, request_fingerprint: str) -> Reply | None:
        """The answer for a key already seen (replay, ``409`` or ``422``), or None: the caller owns it now.

        The owner must call :meth:`save` with its answer, or :meth:`release` if it has none.
        """
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            entry = self._entries.get(key)
            if entry is not None and entry.reply is not None and now - entry.set_at >= self._seconds:
                del self._entries[key]
                entry = None
            if entry is None:
                self._entries[key] = _Entry(request_fingerprint, now)
                return None
            if entry.fingerprint != request_fingerprint:
                message = f"This {HEADER} was already used with a different request; use a new key for a new request."
                return json_reply(422, general_error(errors.GENERAL_INVALID_VALUE, message))
            if entry.reply is None:
                message = f"A request with this {HEADER} is still in progress; wait, then send it again."
                return json_reply(409, general_error(errors.GENERAL_LOCKING_CONTENTION, message))
            return entry.reply

    def save(self, key: str, reply: Reply) -> None:
        """Save the answer of the request that claimed ``key``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.reply = reply

    def release(self, key: str) -> None:
        """Forget a claimed key whose request ended without an answer to save."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.reply is None:
                del self._entries[key]

    def _trim(self, now: float) -> None:
        # Bounded memory under long benchmarks; in-flight keys at the front stop the sweep.
        while self._entries:
            entry = next(iter(self._entries.values()))
            if entry.reply is None or now - entry.set_at < self._seconds:
                return
            self._entries.popitem(last=False)
