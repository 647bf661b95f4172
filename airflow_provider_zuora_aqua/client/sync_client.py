"""
The sync HTTP client (``requests``): one send for every AQuA call, result files included.

:class:`AquaClient` holds, for sync callers, the one copy of

* the 401 rule: an exchange answered ``401`` gets a new token and is sent once more
  (:meth:`AquaClient.send`);
* the exchange deadline: an exchange ends within its bound of wall-clock time, whatever phase
  it is in (:class:`ExchangeDeadline`). ``requests`` only bounds each socket read, so a server
  that drips one byte at a time would otherwise keep a call alive indefinitely;
* the mapping of transport failures onto :func:`~.failures.transport_error`
  (:meth:`AquaClient.exchange`);
* streaming: a result file goes to its receiver through the same send, the body of a file
  bounded per read and by a throughput floor rather than in total (a file may legitimately
  take long), its transport encoding decoded here in bounded pieces.

Its async twin is :mod:`.async_client`. Imported only where a call is made: ``requests`` and
``urllib3`` are not loaded at DAG parse.
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils
import tenacity
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.poolmanager
from requests import Session

from airflow_provider_zuora_aqua.client import server_clock
from airflow_provider_zuora_aqua.client.answers import CallRecord, HttpAnswer
from airflow_provider_zuora_aqua.client.auth import TOKEN_HEADERS, TOKEN_PATH, Credentials, Log
from airflow_provider_zuora_aqua.client.body import (
    READ_CHUNK_BYTES,
    AnswerReader,
    BodyDecoder,
    CorruptEncodingError,
    UnsupportedEncodingError,
    decode_prefix,
)
from airflow_provider_zuora_aqua.client.downloads import (
    MAX_ERROR_BODY,
    ThroughputFloor,
    carries_file,
    download_headers,
    file_error,
)
from airflow_provider_zuora_aqua.client.failures import CONNECT_SECONDS, Failure, exchange_seconds, transport_error
from airflow_provider_zuora_aqua.client.request import FILES_PATH, validate_track_id
from airflow_provider_zuora_aqua.client.retry import retry_policy
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings, is_loopback
from airflow_provider_zuora_aqua.client.urllib3_read1 import read1
from airflow_provider_zuora_aqua.exceptions import AquaInvalidAnswerError

if TYPE_CHECKING:
    from types import TracebackType

    from airflow_provider_zuora_aqua.exceptions import AquaTransportError

T = TypeVar("T")

#: Bytes of a result file read from the network at a time: large reads keep Python's per-chunk cost negligible.
FILE_CHUNK_BYTES = 1024 * 1024
#: What ``requests`` and ``urllib3`` raise when an exchange gets no (complete) answer.
_TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


class Receiver(Protocol):
    """Where a result file goes (:class:`~airflow_provider_zuora_aqua.results.receiver.FileReceiver`)."""

    received: int

    @property
    def resume_offset(self) -> int: ...

    @property
    def validator(self) -> str | None: ...

    def begin(self, status: int, headers: Mapping[str, str], offset: int) -> None: ...

    def write(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...


class AquaClient:
    """
    The sync client of one connection, with its own HTTP session.

    :param settings: the connection.
    :param log: where tokens and resends are told (the hook's log, so the task log).
    :param record: where each call leaves its ``Zuora-Request-Id`` and attempt count.
    """

    def __init__(self, settings: AquaConnectionSettings, *, log: Log, record: CallRecord | None = None) -> None:
        self.settings = settings
        self.auth = Credentials(settings, log)
        self.record = CallRecord() if record is None else record
        self.session = new_session()
        #: What requests would read from the environment at every call (a scan of every variable,
        #: twice, and ~/.netrc): read once per client instead (see :func:`environment_options`).
        self._options = environment_options(settings.base_url)

    def call(
        self,
        method: str,
        path: str,
        *,
        read: Callable[[HttpAnswer], T],
        track_id: str | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
        keyed_submit: bool = False,
        deadline: float | None = None,
    ) -> T:
        """
        One AQuA call: :meth:`send`, the answer read by ``read``, retried within the retry
        policy and ``deadline`` (a ``time.monotonic()`` instant); errors and result scrubbed.

        :param idempotent: whether the call may be resent after it may have arrived.
        :param keyed_submit: a submit with an ``Idempotency-Key``: a rate-limit refusal is not
            resent with the same key (see :func:`~.retry.is_retryable`).
        """
        track_id = validate_track_id(track_id)
        max_seconds = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.record.attempts = 0

        def attempt() -> T:
            self.record.attempts += 1
            with self.auth.scrubbing():
                answer = self.send(method, path, track_id=track_id, json=json, headers=headers, deadline=deadline)
                return self.auth.scrubbed(read(answer))

        policy = retry_policy(self.settings, idempotent=idempotent, keyed_submit=keyed_submit, max_seconds=max_seconds)
        return tenacity.Retrying(**policy)(attempt)

    def download(self, file_id: str, receiver: Receiver, *, track_id: str | None = None) -> None:
        """
        Stream result file ``file_id`` into ``receiver``, retried within the retry policy: a
        dropped connection is sent again from the receiver's ``resume_offset`` (``Range``).
        """
        track_id = validate_track_id(track_id)

        def attempt() -> None:
            with self.auth.scrubbing():
                answer = self.send(
                    "GET",
                    f"{FILES_PATH}/{file_id}",
                    track_id=track_id,
                    headers=download_headers(receiver.resume_offset, receiver.validator),
                    receiver=receiver,
                )
                if not carries_file(answer.status, answer.headers):
                    raise file_error(answer, file_id)

        tenacity.Retrying(**retry_policy(self.settings))(attempt)

    def access_token(self) -> str:
        """The shared token, fetched within the retry policy when there is none."""
        return tenacity.Retrying(**retry_policy(self.settings))(self.token)

    def token(self, deadline: float | None = None) -> str:
        """The shared token of this connection (see :meth:`~.auth.Credentials.token`)."""
        return self.auth.token(lambda: self.fetch_token(deadline), deadline)

    def fetch_token(self, deadline: float | None = None) -> tuple[str, float]:
        """A new token and its lifetime, from one exchange (neither cached nor retried here)."""
        with self.auth.scrubbing():
            answer = self.exchange("POST", TOKEN_PATH, headers=TOKEN_HEADERS, data=self.auth.form(), deadline=deadline)
            token, expires_in = self.auth.read_token_answer(answer)
        self.auth.mask(token)
        return token, expires_in

    def send(
        self,
        method: str,
        path: str,
        *,
        track_id: str | None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        deadline: float | None = None,
        receiver: Receiver | None = None,
    ) -> HttpAnswer:
        """
        :meth:`exchange` with the shared token and the call's headers (``headers`` last); on a
        ``401`` the token is replaced once and the exchange sent once more.
        """

        def exchange(token: str) -> HttpAnswer:
            return self.exchange(
                method,
                path,
                headers=self.auth.headers(token, track_id, headers),
                json=json,
                deadline=deadline,
                receiver=receiver,
            )

        token = self.token(deadline)
        answer = exchange(token)
        if answer.status == 401:
            self.auth.refused(token, f"{method} {path}")
            answer = exchange(self.token(deadline))
        self.record.request_id = answer.request_id
        return answer

    def exchange(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        json: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        deadline: float | None = None,
        receiver: Receiver | None = None,
    ) -> HttpAnswer:
        """
        One HTTP exchange, bounded: its answer within the connection's ``timeout`` (or what is
        left to ``deadline``) of wall-clock time, its body within the answer cap of
        :mod:`.body`, decoded or not. Transport failures raise :func:`~.failures.transport_error`.

        With a ``receiver``, an answer that carries the file is streamed into it (the answer
        returned then has an empty body); of any other answer the first
        :data:`~.downloads.MAX_ERROR_BODY` bytes are read, for the error.
        """
        what = f"{method} {path}"
        with ExchangeDeadline(exchange_seconds(self.settings.timeout, deadline)) as bound:
            seconds = bound.seconds
            try:
                response = self.session.request(
                    method,
                    f"{self.settings.base_url}{path}",
                    headers=headers,
                    json=json,
                    data=data,
                    timeout=(min(CONNECT_SECONDS, seconds), seconds),
                    allow_redirects=False,
                    stream=True,
                    **self._options,
                )
            except _TRANSPORT_ERRORS as exc:
                raise self._failed(what, exc, bound) from None
            with response:
                if receiver is not None and carries_file(response.status_code, response.headers):
                    self._end_bound(what, bound)
                    self._receive(what, response, receiver, bound)
                    body = b""
                else:
                    body = self._read(what, response, bound, whole=receiver is None)
                    self._end_bound(what, bound)
        server_clock.observe(self.settings.base_url, response.headers)
        return HttpAnswer(response.status_code, response.headers, body)

    def _end_bound(self, what: str, bound: ExchangeDeadline) -> None:
        """
        Stop the deadline; if it fired, what arrived is no answer: cut short by the shutdown,
        a status line or a body may still parse (``http.client`` takes a truncated head).
        """
        bound.release()
        if bound.fired:
            raise transport_error(what, self.settings.base_url, Failure.DEADLINE, seconds=bound.seconds)

    def _read(self, what: str, response: requests.Response, bound: ExchangeDeadline, *, whole: bool) -> bytes:
        """The body: whole, within the answer cap; or the first bytes of an answer about a file."""
        try:
            if not whole:
                # Raw and decoded alike bounded: a small gzip error body must not expand without limit.
                raw = response.raw.read(MAX_ERROR_BODY, decode_content=False) or b""
                return decode_prefix(raw, response.headers.get("Content-Encoding"), MAX_ERROR_BODY)
            reader = AnswerReader(response.status_code, response.headers, what=what, deadline=bound.deadline)
            for chunk in response.raw.stream(READ_CHUNK_BYTES, decode_content=False):
                reader.feed(chunk)
            return reader.finish()
        except _TRANSPORT_ERRORS as exc:
            raise self._failed(what, exc, bound) from None

    def _receive(self, what: str, response: requests.Response, receiver: Receiver, bound: ExchangeDeadline) -> None:
        """
        A file answer into the receiver. Each read is bounded by the timeout, and the pace by
        :class:`~.downloads.ThroughputFloor`; the whole is not (a file may legitimately take long).
        The body is read raw and a transport encoding decoded here, in bounded pieces.
        """
        receiver.begin(response.status_code, response.headers, receiver.resume_offset)
        try:
            decoder = BodyDecoder(response.headers.get("Content-Encoding"))
        except UnsupportedEncodingError as exc:
            raise self._bad_file_answer(what, response, str(exc)) from None
        floor = ThroughputFloor(self.settings.timeout)
        raw = response.raw
        while True:
            started = time.monotonic()
            try:  # only the network: a failure to store a chunk is not a transport failure
                chunk = read1(raw, FILE_CHUNK_BYTES)
            except _TRANSPORT_ERRORS as exc:
                raise self._failed(what, exc, bound, received=receiver.received) from None
            too_slow = floor.arrived(len(chunk), time.monotonic() - started)
            if too_slow is not None:
                raise transport_error(
                    what, self.settings.base_url, Failure.BROKEN, too_slow, received=receiver.received
                )
            try:
                for piece in decoder.decode(chunk):
                    receiver.write(piece)
                if not chunk:
                    decoder.finish()
                    break
            except CorruptEncodingError as exc:
                raise self._bad_file_answer(what, response, str(exc)) from None
        receiver.end()

    @staticmethod
    def _bad_file_answer(what: str, response: requests.Response, why: str) -> AquaInvalidAnswerError:
        return AquaInvalidAnswerError(
            f"Zuora's answer to {what} was refused: {why}",
            status_code=response.status_code,
            request_id=HttpAnswer(response.status_code, response.headers, b"").request_id,
        )

    def _failed(
        self, what: str, exc: Exception, bound: ExchangeDeadline, *, received: int | None = None
    ) -> AquaTransportError:
        failure, detail = _failure(exc, deadline_passed=bound.fired)
        return transport_error(what, self.settings.base_url, failure, detail, seconds=bound.seconds, received=received)


def _failure(exc: Exception, *, deadline_passed: bool) -> tuple[Failure, str]:
    """Where a ``requests`` exchange failed, for :func:`~.failures.transport_error`."""
    first = exc.args[0] if exc.args else None
    reason = getattr(first, "reason", None)  # urllib3's error inside requests' MaxRetryError
    if isinstance(reason, urllib3.exceptions.ProxyError):  # the proxy itself could not be reached
        reason = reason.original_error
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        cause = reason.__cause__  # the socket's own words, as aiohttp gives them
        return Failure.NOT_CONNECTED, str(cause) if cause else str(reason).split(": ", 1)[-1]
    if isinstance(exc, requests.exceptions.ConnectTimeout) or isinstance(
        reason, urllib3.exceptions.ConnectTimeoutError
    ):
        return Failure.CONNECT_TIMEOUT, ""
    if isinstance(exc, requests.exceptions.SSLError) or isinstance(reason, urllib3.exceptions.SSLError):
        return Failure.TLS_HANDSHAKE, str(getattr(reason, "args", [None])[0] or reason or exc)
    if deadline_passed:
        return Failure.DEADLINE, ""
    if any(isinstance(error, urllib3.exceptions.ReadTimeoutError) for error in (exc, first, reason)) or isinstance(
        exc, requests.exceptions.ReadTimeout
    ):
        return Failure.READ_TIMEOUT, ""
    return Failure.BROKEN, f"{type(exc).__name__}: {reason or exc}"


def proxy_for(url: str) -> str | None:
    """
    The proxy for ``url``: none for a loopback host, else what ``requests`` takes from the
    environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``).

    The async client asks here too, so both clients send the same calls through the same proxy.
    A loopback exchange (plain http to the local simulator carries the client secret in clear)
    never goes through a proxy.
    """
    if is_loopback(urlsplit(url).hostname or ""):
        return None
    return requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))


def environment_options(url: str) -> dict[str, Any]:
    """
    ``proxies`` and ``verify`` for calls to ``url`` as ``requests`` takes them from the
    environment (``HTTPS_PROXY``, ``NO_PROXY``..., ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``),
    read once: a :func:`new_session` session does not read the environment itself. No proxy for
    a loopback host.
    """
    proxies = {} if is_loopback(urlsplit(url).hostname or "") else requests.utils.get_environ_proxies(url)
    verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return {"proxies": proxies, "verify": verify}


def new_session() -> Session:
    """
    A session that honours :class:`ExchangeDeadline`, never goes through a proxy to a loopback
    host, and does not read the environment at each call (``trust_env`` off: proxies and CA
    bundle come from :func:`environment_options`; ``~/.netrc`` is never read).
    """
    session = Session()
    session.trust_env = False
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_local = threading.local()


class ExchangeDeadline:
    """
    Within this block, the current thread's exchanges on a :func:`new_session` session end
    after ``seconds``: the connection is shut down and the pending read fails.

    No thread per exchange: one watchdog thread per process ends every exchange whose deadline
    passed. No lock either: a signal handler (``on_kill``) may run an exchange in the middle of
    another one of its thread; the interrupted exchange's bound is restored when the handler's ends.

    :param seconds: wall-clock bound of the exchange, from entering the block.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self.over = False
        self._connection: urllib3.connection.HTTPConnection | None = None
        self._outer: ExchangeDeadline | None = None

    def __enter__(self) -> ExchangeDeadline:
        self._outer = getattr(_local, "exchange", None)
        _local.exchange = self
        _WATCHDOG.watch(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
        _local.exchange = self._outer

    def release(self) -> None:
        """Stop bounding the exchange (for a file's body, whose reads stay bounded one by one)."""
        self.over = True
        self._connection = None

    def watch(self, connection: urllib3.connection.HTTPConnection) -> None:
        if self.over:
            return
        self._connection = connection
        if self.fired:  # the watchdog came first: it may have missed this connection
            _shut(connection)

    def fire(self) -> None:
        """The deadline passed (called by the watchdog)."""
        if self.over:
            return
        self.fired = True
        connection = self._connection
        if connection is not None:
            _shut(connection)


class _Watchdog:
    """
    One daemon thread that fires the deadlines of :class:`ExchangeDeadline` blocks.

    Exchanges reach it through a ``SimpleQueue``, whose ``put`` is safe even in a signal
    handler that interrupted another ``put``; only the watchdog thread touches its heap.
    """

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[ExchangeDeadline] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def watch(self, exchange: ExchangeDeadline) -> None:
        self._inbox.put(exchange)
        thread = self._thread
        if thread is None or not thread.is_alive():
            # Two threads racing here may start two watchdogs; each exchange still goes to one.
            self._thread = thread = threading.Thread(target=self._run, name="aqua-exchange-deadlines", daemon=True)
            thread.start()

    def _run(self) -> None:
        pending: list[tuple[float, int, ExchangeDeadline]] = []
        order = itertools.count()
        for exchange in self._arrivals(pending):
            heapq.heappush(pending, (exchange.deadline, next(order), exchange))

    def _arrivals(self, pending: list[tuple[float, int, ExchangeDeadline]]) -> Iterator[ExchangeDeadline]:
        """New exchanges, as they come; meanwhile fire the deadlines that pass and drop finished exchanges."""
        while True:
            wait = None
            while pending:
                deadline, _, exchange = pending[0]
                wait = deadline - time.monotonic()
                if wait > 0 and not exchange.over:
                    break
                heapq.heappop(pending)
                if wait <= 0:
                    exchange.fire()
                wait = None
            try:
                yield self._inbox.get(timeout=wait)
            except queue.Empty:
                continue

    def _after_fork(self) -> None:
        # The child has no watchdog thread, and must never shut the parent's sockets.
        self._inbox = queue.SimpleQueue()
        self._thread = None


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._after_fork)


def _shut(connection: urllib3.connection.HTTPConnection) -> None:
    """End every pending read and write on the connection (from another thread)."""
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        # The plain socket call: an SSL socket's own shutdown() would drop its TLS state
        # under the reading thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass


def _watch(connection: urllib3.connection.HTTPConnection) -> None:
    exchange = getattr(_local, "exchange", None)
    if exchange is not None:
        exchange.watch(connection)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self)
        return super().request(*args, **kwargs)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self)
        return super().request(*args, **kwargs)


class _HTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


class _Adapter(requests.adapters.HTTPAdapter):
    """Watched connections; no proxy for loopback hosts."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> urllib3.poolmanager.PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:  # not SOCKS
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if is_loopback(urlsplit(request.url or "").hostname or ""):
            kwargs["proxies"] = {}
        return super().send(request, *args, **kwargs)
