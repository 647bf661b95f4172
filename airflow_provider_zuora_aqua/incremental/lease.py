"""
One writer per destination and query: a lease in the query's folder.

Two exports of one query into one destination at once (two DAGs, two task instances) would both
plan from the same watermark: the same windows exported twice, overlapping windows, and every
later run refused on the overlap. So an export holds the lease of each query's folder from before
it reads the watermark until it has published its last window::

    <destination>/<query>/_lease.json

(the watermark's reader only reads folders named like a window, see
:mod:`~airflow_provider_zuora_aqua.incremental.ledger`: this file is not one). It is a small JSON
object: the holder (``dag_id``, ``task_id``, ``run_id``, ``try_number``, ``map_index``, ``host``),
a random ``token`` that tells this holder's lease from any other, and ``acquired``, ``renewed``
and ``expires`` (UTC, ISO 8601).

* **Acquired** by an atomic create: on a local disk the lease is written whole under a hidden
  name and hard-linked to ``_lease.json`` (which fails when it exists; ``O_CREAT | O_EXCL`` where
  there are no hard links), on S3 a conditional put (``If-None-Match: *``). Of two writers,
  exactly one creates the file.
* **Renewed** every TTL / 3 by a daemon thread while the export runs, and only while the file still
  holds this lease's token. A lease not renewed within its TTL (the store unreachable, the worker
  stalled), or taken over by another holder, is *lost*: :meth:`DestinationLease.check`, called
  before each window is published, then raises and the export stops before publishing anything
  more.
* **Released** at the end: the file is removed, only if it still holds this lease's token.
* A **second writer fails fast** with :class:`~airflow_provider_zuora_aqua.exceptions.AquaDestinationBusyError`
  naming the holder and when its lease expires (or waits up to ``wait_seconds`` for it first).
* A lease whose holder died is **taken over** once it has expired, atomically: of several takers,
  exactly one wins and the others fail as second writers. On a local disk the taker renames the
  expired file aside, checks that it moved the very file it judged expired (only one rename can
  move it), then creates its own as above (a new writer that comes in between gets the lease
  instead: still one writer); on S3 it replaces the object with a conditional put (``If-Match``
  on the ETag of the expired one).
* A lease file that cannot be read (not JSON, not ours, over 64 KiB, not a regular file) counts
  as held until its last modification plus the TTL, then is taken over like an expired one. A
  lease is never trusted for longer than :data:`MAX_LEASE_TTL` after its file last changed.

Which stores guarantee one writer:

* **Local disks** (``file://``, a path), and network file systems with an atomic exclusive
  create and rename (NFSv3 and later): yes.
* **Amazon S3** (``s3://``), and S3-compatible stores that honour conditional writes
  (``If-None-Match: *`` and ``If-Match`` on PutObject, ``If-Match`` on DeleteObject): yes.
* **Any other object store** (``gs://``, ``abfs://``, ...), and an S3-compatible store that
  refuses conditional writes (``501 NotImplemented``): **no**. The lease is then written and read
  back to compare its token, which catches most collisions but cannot guarantee one writer: two
  exports that start within moments of each other can both believe they hold it. A warning says
  so; give each export its own destination there. An S3-compatible store that silently ignores
  the conditions cannot be told apart from S3 and guarantees nothing either.

Expiry compares the ``expires`` a holder wrote with the reader's clock (and, for an unreadable
file, the store's modification time): the hosts' clocks must agree within a small part of the
TTL. A holder considers its lease lost once its own monotonic clock says it went unrenewed for a
TTL, whatever the wall clock says. (On a local disk a renewal checks the token, then replaces the
file: it could only overwrite a taker's lease if the taker's clock ran ahead by most of a TTL; the
taker's :meth:`DestinationLease.check` then finds its lease lost before it publishes.)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaDestinationBusyError, AquaError
from airflow_provider_zuora_aqua.incremental.lease_stores import (
    LEASE_NAME,
    MAX_LEASE_BYTES,
    Found,
    Store,
    parse_time,
    store_of,
)
from airflow_provider_zuora_aqua.results.destination import Destination

__all__ = ["DEFAULT_LEASE_TTL", "LEASE_NAME", "MAX_LEASE_TTL", "MIN_LEASE_TTL", "DestinationLease", "LeaseHolder"]

UTC = timezone.utc
#: Renewed every 100 s: two renewals in a row may fail (a store hiccup, a stalled worker) before
#: the lease is lost, and a dead holder blocks its query for at most 5 minutes, no longer than
#: Airflow's default ``retry_delay``, so the retry of a killed try usually finds it expired.
DEFAULT_LEASE_TTL = timedelta(minutes=5)
MIN_LEASE_TTL = timedelta(seconds=1)
#: No lease is trusted for longer than this after its file last changed (a far-off ``expires``).
MAX_LEASE_TTL = timedelta(hours=1)
#: How often a waiting writer looks at the lease again.
POLL_SECONDS = 1.0
_FORMAT = 1
_TOKEN_BYTES = 16
_MAX_TEXT = 250
#: A create, read and take-over may race other writers this many times before the writer gives up.
_ATTEMPTS = 3
_RELEASE_JOIN_SECONDS = 10.0
#: A renewal that failed is tried again this soon (or at the next renewal if sooner).
_RETRY_SECONDS = 10.0

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- the holder and what a lease file says ------------------------------------------------------


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease: a task instance and the host it runs on."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int = -1
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def of_task_instance(cls, ti: Any) -> LeaseHolder:
        """The holder of an Airflow task instance (``context["ti"]``), on this host."""
        map_index = getattr(ti, "map_index", None)
        return cls(
            dag_id=str(ti.dag_id),
            task_id=str(ti.task_id),
            run_id=str(ti.run_id),
            try_number=int(getattr(ti, "try_number", 0) or 0),
            map_index=-1 if map_index is None else int(map_index),
            host=socket.gethostname(),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def succeeds(self, other: LeaseHolder) -> bool:
        """
        Whether this holder is a later try of ``other``'s task instance: Airflow starts a try only
        once the one before it ended (a SIGKILLed try is failed first), so its lease is stale.
        """
        same = (self.dag_id, self.task_id, self.run_id, self.map_index)
        return same == (other.dag_id, other.task_id, other.run_id, other.map_index) and (
            self.try_number > other.try_number
        )

    @classmethod
    def from_json(cls, data: object) -> LeaseHolder:
        """:raises ValueError: not a holder as :meth:`to_json` writes one."""
        if not isinstance(data, dict):
            raise ValueError("its holder is not a JSON object")
        values: dict[str, Any] = {}
        for name in ("dag_id", "task_id", "run_id", "host"):
            value = data.get(name)
            if not isinstance(value, str) or len(value) > _MAX_TEXT:
                raise ValueError(f"its holder's {name} is not a text of at most {_MAX_TEXT} characters")
            values[name] = value
        for name in ("try_number", "map_index"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"its holder's {name} is not a whole number")
            values[name] = value
        return cls(**values)

    def describe(self) -> str:
        task = f"task {self.task_id!r}" + (f" (map index {self.map_index})" if self.map_index >= 0 else "")
        return f"dag {self.dag_id!r}, {task}, run {self.run_id!r}, try {self.try_number}, on host {self.host!r}"


@dataclass(frozen=True)
class LeaseState:
    """What a reader makes of a lease file."""

    holder: LeaseHolder | None
    token: str | None
    #: When it may be taken over.
    expires: datetime
    #: Why the file cannot be read as a lease (None: it can).
    problem: str | None = None


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(holder: LeaseHolder, token: str, acquired: datetime, renewed: datetime, ttl: timedelta) -> bytes:
    document = {
        "format": _FORMAT,
        "holder": holder.to_json(),
        "token": token,
        "acquired": _iso(acquired),
        "renewed": _iso(renewed),
        "expires": _iso(renewed + ttl),
        "ttl_seconds": ttl.total_seconds(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def _parse(raw: bytes) -> tuple[LeaseHolder, str, datetime]:
    """:raises ValueError: not a lease file of ours (the message says why)."""
    if len(raw) > MAX_LEASE_BYTES:
        raise ValueError(f"it is over {MAX_LEASE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("it is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"it is not a JSON object of format {_FORMAT}")
    token = data.get("token")
    if not isinstance(token, str) or not 16 <= len(token) <= 128:
        raise ValueError("it holds no token")
    return LeaseHolder.from_json(data.get("holder")), token, parse_time(data.get("expires"), "expires")


def judge(found: Found, ttl: timedelta) -> LeaseState:
    """
    The holder, token and expiry of a lease file. One that cannot be read counts as held until
    its last modification plus ``ttl`` (expired at once when the store gives no modification
    time); a readable one is never trusted beyond its last modification plus :data:`MAX_LEASE_TTL`.
    """
    problem = found.problem
    if problem is None:
        try:
            holder, token, expires = _parse(found.raw)
        except ValueError as exc:
            problem = str(exc)
        else:
            if found.modified is not None:
                expires = min(expires, found.modified + MAX_LEASE_TTL)
            return LeaseState(holder, token, expires)
    expires = found.modified + ttl if found.modified is not None else datetime.min.replace(tzinfo=UTC)
    return LeaseState(None, None, expires, problem)


# -- stores -------------------------------------------------------------------------------------


def _check_ttl(ttl: object) -> timedelta:
    if not isinstance(ttl, timedelta) or not MIN_LEASE_TTL <= ttl <= MAX_LEASE_TTL:
        raise AquaConfigurationError(
            f"lease ttl {ttl!r}: give a timedelta from {MIN_LEASE_TTL} to {MAX_LEASE_TTL} (default {DEFAULT_LEASE_TTL})"
        )
    return ttl


def _busy(uri: str, state: LeaseState) -> AquaDestinationBusyError:
    until = _iso(state.expires)
    advice = (
        "Two exports of one query into one destination would export the same windows twice. Wait: a retry of "
        "this task takes the lease once the other export ends; or give each export its own destination."
    )
    if state.holder is None:
        return AquaDestinationBusyError(
            f"{uri} is not a lease this provider can read ({state.problem}): it counts as held until {until} "
            f"(its last change plus the lease's TTL), then it is taken over. If no other export of this query into "
            f"this destination runs, remove it. {advice}",
            expires=until,
        )
    return AquaDestinationBusyError(
        f"{uri} is held by another export of this query into this destination: {state.holder.describe()}, until "
        f"{until} unless renewed (it is renewed while that export runs; it expires then if that export died). "
        f"{advice}",
        holder=state.holder.to_json(),
        expires=until,
    )


class DestinationLease:
    """
    The lease of one query's folder in a destination (see the module docs). Get one with
    :meth:`acquire`; use it as a context manager, or call :meth:`release` at the end.
    """

    def __init__(
        self,
        store: Store,
        holder: LeaseHolder,
        token: str,
        *,
        ttl: timedelta,
        clock: Clock,
        log: Any,
        acquired: datetime,
        version: str,
        valid_until: float,
    ) -> None:
        self._store = store
        self.holder = holder
        self.token = token
        self.ttl = ttl
        self.acquired = acquired
        self._clock = clock
        self._log = log
        #: time.monotonic() after which the lease counts as lost unless renewed.
        self._valid_until = valid_until
        self.expires = acquired + ttl
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost: AquaDestinationBusyError | None = None
        self._released = False

    @property
    def uri(self) -> str:
        """The lease file's URI."""
        return self._store.uri

    @property
    def one_writer(self) -> bool:
        """Whether the store guarantees one writer (see the module docs)."""
        return self._store.one_writer

    @property
    def lost(self) -> bool:
        return self._lost is not None

    @classmethod
    def acquire(
        cls,
        folder: Destination,
        holder: LeaseHolder,
        *,
        ttl: timedelta = DEFAULT_LEASE_TTL,
        wait_seconds: float = 0.0,
        stop: threading.Event | None = None,
        clock: Clock = utc_now,
        renew: bool = True,
        log: Any = None,
    ) -> DestinationLease:
        """
        Take the lease of ``folder`` (a query's folder: ``destination.child(query)``) for ``holder``.

        :param ttl: how long the lease lasts unless renewed; renewed every ``ttl / 3``.
        :param wait_seconds: how long to wait, looking every second, for a lease held by another
            export (0: fail at once).
        :param stop: set to stop waiting at once (``on_kill``).
        :param clock: now, in UTC (for tests).
        :param renew: whether a daemon thread renews the lease until :meth:`release`.
        :raises AquaDestinationBusyError: another export holds the lease (the message names it).
        """
        ttl = _check_ttl(ttl)
        if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, (int, float)) or not wait_seconds >= 0:
            raise AquaConfigurationError(f"lease wait_seconds {wait_seconds!r}: give a number of seconds, 0 or more")
        log = log if log is not None else logging.getLogger(__name__)
        store = store_of(folder, log)
        if not store.one_writer:
            log.warning(
                "%s: this store has no conditional write, so its lease cannot guarantee one writer: two exports "
                "that start together can both write this query; give each export its own destination",
                store.uri,
            )
        deadline = time.monotonic() + wait_seconds
        waiting = False
        while True:
            try:
                outcome = cls._attempt(store, holder, ttl, clock, log)
            except OSError as exc:
                raise AquaError(f"{store.uri}: the lease could not be read or written ({exc})") from exc
            if isinstance(outcome, DestinationLease):
                if renew:
                    outcome._start_renewer()
                return outcome
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                raise outcome
            if not waiting:
                log.info("%s Waiting up to %.0f s for it.", outcome.message, remaining)
                waiting = True
            if stop is not None:
                if stop.wait(min(POLL_SECONDS, remaining)):
                    raise outcome
            else:
                time.sleep(min(POLL_SECONDS, remaining))

    @classmethod
    def _attempt(
        cls, store: Store, holder: LeaseHolder, ttl: timedelta, clock: Clock, log: Any
    ) -> DestinationLease | AquaDestinationBusyError:
        """One try at the lease: the lease, or the error naming who holds it."""
        token = secrets.token_hex(_TOKEN_BYTES)

        def held(version: str, started: float, acquired: datetime) -> DestinationLease:
            return cls(
                store,
                holder,
                token,
                ttl=ttl,
                clock=clock,
                log=log,
                acquired=acquired,
                version=version,
                valid_until=started + ttl.total_seconds(),
            )

        for _ in range(_ATTEMPTS):
            started, acquired = time.monotonic(), clock()
            version = store.create(_encode(holder, token, acquired, acquired, ttl))
            if version is not None:
                return held(version, started, acquired)
            found = store.read()
            if found is None:
                continue  # released meanwhile
            state = judge(found, ttl)
            if state.token == token:  # our own write, reported failed (a request sent again)
                return held(found.version, started, acquired)
            earlier_try = state.holder is not None and holder.succeeds(state.holder)
            if clock() < state.expires and not earlier_try:
                return _busy(store.uri, state)
            log.warning(
                "%s %s (%s): taking it over",
                store.uri,
                "is held by an earlier try of this task instance, which has ended"
                if earlier_try
                else f"expired at {_iso(state.expires)}",
                state.holder.describe() if state.holder is not None else state.problem,
            )
            started, acquired = time.monotonic(), clock()
            version = store.replace(_encode(holder, token, acquired, acquired, ttl), found)
            if version is not None:
                return held(version, started, acquired)
            # Another writer changed it first: judged again.
        return AquaDestinationBusyError(
            f"{store.uri} kept changing while this export tried to take it: another export of this query into this "
            "destination is starting. Wait: a retry of this task takes the lease once the other export ends; or "
            "give each export its own destination."
        )

    # -- while held -----------------------------------------------------------------------------

    def check(self) -> None:
        """
        Call before each publish: raise if the lease is lost (taken over by another holder, its
        file gone, or not renewed within its TTL). A store that cannot be read just now is no
        loss while the lease is still within its TTL: no one else can take it before then.

        :raises AquaDestinationBusyError: the lease is lost; nothing more may be published.
        """
        with self._lock:
            self._live()
            try:
                found = self._store.read()
            except Exception as exc:
                self._log.warning("Could not read %s to check the lease (%s): it is held until its TTL", self.uri, exc)
                return
            self._verify(found)

    def renew(self) -> None:
        """Renew the lease now (the renewer thread calls this every ``ttl / 3``)."""
        with self._lock:
            started = time.monotonic()
            self._live()
            found = self._store.read()
            self._verify(found)
            assert found is not None
            renewed = self._clock()
            data = _encode(self.holder, self.token, self.acquired, renewed, self.ttl)
            version = self._store.rewrite(data, found)
            if version is None:
                back = self._store.read()  # changed under us, or our own write reported failed
                self._verify(back)
                assert back is not None
                if back.raw != data:
                    raise self._lose("its file changed while it was being renewed")
                version = back.version
            self._valid_until = started + self.ttl.total_seconds()
            self.expires = renewed + self.ttl

    def release(self) -> None:
        """
        Stop renewing and remove the lease file if it still holds this lease; never raises (a
        lease that cannot be removed expires on its own).
        """
        self._stop.set()
        renewer = self._renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(_RELEASE_JOIN_SECONDS)
        with self._lock:
            if self._released:
                return
            self._released = True
            if self._lost is not None:
                return
            try:
                found = self._store.read()
                if found is None or judge(found, self.ttl).token != self.token:
                    self._log.warning("%s no longer held this export's lease when released", self.uri)
                elif self._store.delete(found):
                    self._log.info("Released %s", self.uri)
                else:
                    self._log.warning("%s changed while it was being released", self.uri)
            except Exception as exc:
                self._log.warning("Could not remove %s (%s): it expires at %s", self.uri, exc, _iso(self.expires))

    def __enter__(self) -> DestinationLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    # -- inside -------------------------------------------------------------------------------

    def _live(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._released:
            raise AquaDestinationBusyError(f"the lease on {self.uri} was released: nothing more may be published")
        if time.monotonic() >= self._valid_until:
            raise self._lose(f"it was not renewed within its TTL of {self.ttl}")

    def _verify(self, found: Found | None) -> None:
        if found is None:
            raise self._lose("its file was removed")
        state = judge(found, self.ttl)
        if state.token != self.token:
            if state.holder is not None:
                raise self._lose(
                    f"it is now held by {state.holder.describe()}, until {_iso(state.expires)}",
                    holder=state.holder.to_json(),
                    expires=_iso(state.expires),
                )
            raise self._lose(f"its file was replaced by one that is no lease ({state.problem})")

    def _lose(self, why: str, **details: Any) -> AquaDestinationBusyError:
        self._lost = AquaDestinationBusyError(
            f"The lease on {self.uri} was lost: {why}. This export stops before publishing anything more, or two "
            "exports would write the same windows; a retry of this task takes the lease again once it is free.",
            **details,
        )
        self._stop.set()
        return self._lost

    def _start_renewer(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name=f"aqua-lease {self.uri}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        interval = self.ttl.total_seconds() / 3
        wait = interval
        while not self._stop.wait(wait):
            try:
                self.renew()
            except AquaDestinationBusyError as exc:
                if not self._released:
                    self._log.error("%s", exc)
                return
            except Exception as exc:
                # Sooner than the next renewal: the lease is lost once a TTL passes without one.
                wait = min(interval, _RETRY_SECONDS)
                self._log.warning("Could not renew %s (%s): trying again in %.0f s", self.uri, exc, wait)
            else:
                wait = interval
