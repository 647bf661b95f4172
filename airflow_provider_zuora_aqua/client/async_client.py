"""
The async HTTP client (``aiohttp``), twin of :mod:`.sync_client` with the same contract, for triggers.

:class:`AsyncAquaClient` holds, for async callers, the one copy of the 401 rule, the exchange
bound and the mapping of transport failures onto :func:`~.failures.transport_error`; the answers
are read by the same :mod:`.answers` rules, the token comes from the same cache, and proxies from
:func:`.sync_client.proxy_for`. Also the plumbing the triggers of one event loop share: the HTTP
session (:func:`shared_client_session`) and a lookup cache.

``aiohttp`` is imported where it is used: DAG files import the hook, and with it this module,
at every parse.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

import tenacity

from airflow_provider_zuora_aqua.client import server_clock
from airflow_provider_zuora_aqua.client.answers import CallRecord, HttpAnswer
from airflow_provider_zuora_aqua.client.auth import TOKEN_HEADERS, TOKEN_PATH, Credentials, Log
from airflow_provider_zuora_aqua.client.body import READ_CHUNK_BYTES, AnswerReader
from airflow_provider_zuora_aqua.client.failures import CONNECT_SECONDS, Failure, exchange_seconds, transport_error
from airflow_provider_zuora_aqua.client.request import validate_track_id
from airflow_provider_zuora_aqua.client.retry import retry_policy

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings

T = TypeVar("T")

#: Connections one event loop keeps to Zuora at most, however many triggers poll.
MAX_CONNECTIONS = 100


class _Shared:
    def __init__(self) -> None:
        # Imported here, not at module top: DAG files import this module at every parse.
        import aiohttp

        # Answers are decoded by client.body, within its size cap, as on the sync path; proxies
        # come from client.sync_client.proxy_for, the rule requests applies, not from trust_env.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS), auto_decompress=False, trust_env=False
        )
        self.users = 0


_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def shared_client_session() -> AsyncIterator[aiohttp.ClientSession]:
    """
    Lend the running loop's session; it is closed when its last user is done.

    A trigger holds it for its whole ``run()``, so a thousand triggers share one connection
    pool, and nothing is left unclosed when the loop ends.
    """
    loop = asyncio.get_running_loop()
    shared = _SESSIONS.get(loop)
    if shared is None:
        shared = _SESSIONS[loop] = _Shared()
    shared.users += 1
    try:
        yield shared.session
    finally:
        shared.users -= 1
        if shared.users == 0:
            del _SESSIONS[loop]
            await shared.session.close()


class AsyncTTLCache(Generic[T]):
    """
    Values loaded at most once per key at a time and kept for ``ttl`` seconds.

    A triggerer starts hundreds of triggers of one connection at once; without this each would
    look the connection up separately.
    """

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._values: dict[str, tuple[float, T]] = {}
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        cached = self._fresh(key)
        if cached is not None:
            return cached
        locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        async with locks.setdefault(key, asyncio.Lock()):
            cached = self._fresh(key)
            if cached is None:
                cached = await load()
                self._values[key] = (time.monotonic() + self._ttl, cached)
            return cached

    def clear(self) -> None:
        self._values.clear()

    def _fresh(self, key: str) -> T | None:
        entry = self._values.get(key)
        return entry[1] if entry is not None and time.monotonic() < entry[0] else None


class AsyncAquaClient:
    """
    The async client of one connection, on a shared ``aiohttp`` session.

    :param settings: the connection.
    :param session: the session to send with (:func:`shared_client_session`).
    :param log: where tokens and resends are told (the hook's log).
    :param record: where each call leaves its ``Zuora-Request-Id`` and attempt count.
    """

    def __init__(
        self,
        settings: AquaConnectionSettings,
        session: aiohttp.ClientSession,
        *,
        log: Log,
        record: CallRecord | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.auth = Credentials(settings, log)
        self.record = CallRecord() if record is None else record

    async def call(self, method: str, path: str, *, read: Callable[[HttpAnswer], T], track_id: str | None = None) -> T:
        """One AQuA call: :meth:`send`, the answer read by ``read``, retried within the retry policy, scrubbed."""
        track_id = validate_track_id(track_id)
        self.record.attempts = 0

        async def attempt() -> T:
            self.record.attempts += 1
            with self.auth.scrubbing():
                return self.auth.scrubbed(read(await self.send(method, path, track_id=track_id)))

        return await tenacity.AsyncRetrying(**retry_policy(self.settings))(attempt)

    async def token(self) -> str:
        """The shared token of this connection, fetched without blocking the event loop."""
        return await self.auth.atoken(self.fetch_token)

    async def fetch_token(self) -> tuple[str, float]:
        """A new token and its lifetime, from one exchange (neither cached nor retried here)."""
        with self.auth.scrubbing():
            answer = await self.exchange("POST", TOKEN_PATH, headers=TOKEN_HEADERS, data=self.auth.form())
            token, expires_in = self.auth.read_token_answer(answer)
        await self.auth.amask(token)
        return token, expires_in

    async def send(self, method: str, path: str, *, track_id: str | None) -> HttpAnswer:
        """
        :meth:`exchange` with the shared token; on a ``401`` the token is replaced once and the
        exchange sent once more.
        """
        token = await self.token()
        answer = await self.exchange(method, path, headers=self.auth.headers(token, track_id))
        if answer.status == 401:
            self.auth.refused(token, f"{method} {path}")
            token = await self.token()
            answer = await self.exchange(method, path, headers=self.auth.headers(token, track_id))
        self.record.request_id = answer.request_id
        return answer

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        data: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> HttpAnswer:
        """
        One HTTP exchange, bounded as the sync client bounds it: its answer within the
        connection's ``timeout`` (or what is left to ``deadline``) of wall-clock time, its body
        within the answer cap of :mod:`.body`. Transport failures raise :func:`~.failures.transport_error`.
        """
        import aiohttp

        from airflow_provider_zuora_aqua.client.sync_client import proxy_for

        what, url = f"{method} {path}", f"{self.settings.base_url}{path}"
        seconds = exchange_seconds(self.settings.timeout, deadline)
        ends = time.monotonic() + seconds
        try:
            async with self.session.request(
                method,
                url,
                headers=headers,
                data=data,
                timeout=aiohttp.ClientTimeout(sock_connect=min(CONNECT_SECONDS, seconds), total=seconds),
                allow_redirects=False,
                proxy=proxy_for(url),
            ) as response:
                reader = AnswerReader(response.status, response.headers, what=what, deadline=ends)
                async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                    reader.feed(chunk)
                server_clock.observe(self.settings.base_url, response.headers)
                return HttpAnswer(response.status, response.headers, reader.finish())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            failure, detail = _failure(exc)
            raise transport_error(what, self.settings.base_url, failure, detail, seconds=seconds) from None


def _failure(exc: BaseException) -> tuple[Failure, str]:
    """Where an ``aiohttp`` exchange failed, for :func:`~.failures.transport_error`."""
    import aiohttp

    # aiohttp 3.10+ tells a connect timeout and a read timeout apart; before, both are plain timeouts.
    connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", ())
    read_timeout = getattr(aiohttp, "SocketTimeoutError", ())
    if isinstance(exc, (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError)):
        return Failure.TLS_HANDSHAKE, str(getattr(exc, "os_error", None) or exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure.NOT_CONNECTED, str(exc.os_error) or str(exc)
    if isinstance(exc, connect_timeout):
        return Failure.CONNECT_TIMEOUT, ""
    if isinstance(exc, read_timeout):
        return Failure.READ_TIMEOUT, ""
    if isinstance(exc, asyncio.TimeoutError):
        return Failure.DEADLINE, ""
    return Failure.BROKEN, f"{type(exc).__name__}: {exc}"
