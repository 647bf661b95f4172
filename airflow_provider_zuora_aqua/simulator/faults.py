"""Injected faults: gateway errors, dropped or cut connections, slow or lost answers.

A fault SPEC on the command line is ``ROUTE:KIND[:key=value]...``:

* ``ROUTE``: ``token``, ``submit``, ``get_job``, ``delete_job``, ``stateful_last_job``,
  ``file``, ``unknown``, or ``*`` for every route.
* ``KIND``: ``429`` (with ``Retry-After``), a 5xx status code such as ``500``, ``502`` or
  ``503``, ``403`` (permission denied; not the file size cap), ``404``, ``drop`` (read the
  request, then close the connection without processing or answering it), ``slow`` (wait
  ``delay`` seconds, then answer normally; on ``submit`` the wait comes after the job is
  created and while its Idempotency-Key is still in flight, so a resend with that key gets
  ``409``), ``drop_mid`` (process the request, send the status line, the headers with the
  full Content-Length and about half the body, then close the connection), or
  ``lost_answer`` (process the request fully, e.g. create the job and save its
  Idempotency-Key answer, then close the connection without answering).
* keys: ``count=N`` (only the first N matching requests), ``rate=P`` (each matching
  request with probability P, from the seeded generator), ``retry_after=S`` (the
  ``Retry-After`` value; 1 by default for 429, none otherwise), ``delay=S`` (for ``slow``;
  1 by default). With neither count nor rate, every matching request is hit; with both,
  each is hit with probability P until N have been hit.

Status faults (429, 5xx, 403, 404) and ``drop`` hit before authentication, the way a
gateway would; ``slow``, ``drop_mid`` and ``lost_answer`` let the request through.

Examples: ``delete_job:429:count=2:retry_after=1``, ``get_job:503:rate=0.3``,
``*:drop:count=1``, ``submit:slow:delay=2:count=1``, ``file:drop_mid:count=1``,
``submit:lost_answer:count=1``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

ROUTES = ("token", "submit", "get_job", "delete_job", "stateful_last_job", "file", "unknown")
ALL_ROUTES = "*"
DROP = "drop"
SLOW = "slow"
DROP_MID = "drop_mid"
LOST_ANSWER = "lost_answer"
_NAMED_KINDS = (DROP, SLOW, DROP_MID, LOST_ANSWER)
# Statuses a fault may answer with besides 5xx.
_OTHER_STATUSES = ("403", "404", "429")
DEFAULT_RETRY_AFTER = 1.0
DEFAULT_DELAY = 1.0


@dataclass
class FaultRule:
    """One fault to inject; ``remaining`` counts down when ``count`` was given."""

    route: str
    kind: str
    remaining: int | None
    rate: float | None
    retry_after: float | None
    delay: float

    @property
    def status(self) -> int | None:
        """The HTTP status the fault answers with; None for the named kinds (``drop``, ``slow``...)."""
        return int(self.kind) if self.kind.isdigit() else None


def make_rule(
    route: str,
    kind: str | int,
    *,
    count: int | None = None,
    rate: float | None = None,
    retry_after: float | None = None,
    delay: float | None = None,
) -> FaultRule:
    """Validate fault settings into a rule; ValueError names the bad setting."""
    if route != ALL_ROUTES and route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)} or '*'")
    kind = str(kind).lower()
    if kind not in _NAMED_KINDS and not (kind in _OTHER_STATUSES or (kind.isdigit() and 500 <= int(kind) <= 599)):
        raise ValueError(
            f"unknown fault kind {kind!r}; expected 403, 404, 429, a 5xx code, "
            "'drop', 'slow', 'drop_mid' or 'lost_answer'"
        )
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count must be a positive integer, not {count!r}")
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be between 0 and 1, not {rate!r}")
    for name, value in (("retry_after", retry_after), ("delay", delay)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative, not {value!r}")
    if kind == "429" and retry_after is None:
        retry_after = DEFAULT_RETRY_AFTER
    return FaultRule(route, kind, count, rate, retry_after, DEFAULT_DELAY if delay is None else delay)


def parse_fault_spec(spec: str) -> dict[str, Any]:
    """Parse a ``ROUTE:KIND[:key=value]...`` SPEC into keyword arguments for ``add_fault``."""
    parts = spec.split(":")
    if len(parts) < 2:
        raise ValueError(f"fault {spec!r}: expected ROUTE:KIND[:key=value]...")
    settings: dict[str, Any] = {"route": parts[0], "kind": parts[1]}
    converters = {"count": int, "rate": float, "retry_after": float, "delay": float}
    for part in parts[2:]:
        key, sep, value = part.partition("=")
        if not sep or key not in converters:
            raise ValueError(f"fault {spec!r}: expected key=value with key one of {', '.join(converters)}")
        try:
            settings[key] = converters[key](value)
        except ValueError:
            raise ValueError(f"fault {spec!r}: {key} must be a number, not {value!r}") from None
    make_rule(**settings)  # validate now, so a bad spec fails before the server starts
    return settings


class FaultInjector:
    """The active fault rules; ``pick`` decides, thread-safely, which one hits a request."""

    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> None:
        """Append a rule; earlier rules are tried first."""
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def pick(self, route: str) -> FaultRule | None:
        """The rule that hits a request on ``route``, if any, consuming its count."""
        with self._lock:
            for rule in self._rules:
                if rule.route not in (ALL_ROUTES, route):
                    continue
                if rule.rate is not None and self._random.random() >= rule.rate:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                return rule
            return None
