"""
The OAuth side of the HTTP clients: one token per connection per process, shared by every hook,
thread and trigger; the token request and the reading of its answer; and the scrubbing of the
client secret and the tokens from whatever a server sends back. Transport-free: the clients in
:mod:`.sync_client` and :mod:`.async_client` send the token request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, quote_plus

from airflow_provider_zuora_aqua.client.answers import HttpAnswer, access_token, parse_answer, token_lifetime
from airflow_provider_zuora_aqua.client.request import build_headers
from airflow_provider_zuora_aqua.compat import amask_secret, mask_secret
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaError,
    AquaInvalidAnswerError,
)

if TYPE_CHECKING:
    from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings

#: Refresh this long before expiry at most (a tenth of the lifetime for short-lived tokens).
REFRESH_MARGIN_SECONDS = 60.0

T = TypeVar("T")
TokenKey = tuple[str, str, str]
_RECENT_TOKENS = 3


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # time.monotonic() after which the token is refreshed


class TokenCache:
    """
    Thread-safe cache of access tokens keyed by tenant and credentials.

    Fork-safe: a child process starts with fresh locks, since a lock held by another thread of
    the parent at ``fork()`` would never be released in the child.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[TokenKey, _Token] = {}
        # The last few tokens of each key, expired ones included: scrubbed from server-derived text.
        self._recent: dict[TokenKey, deque[str]] = {}
        self._reset_locks()
        _ALL_CACHES.add(self)

    def _reset_locks(self) -> None:
        # Re-entrant locks: on_kill runs in a signal handler that may interrupt the same thread.
        self._guard = threading.RLock()
        self._fetch_locks: dict[TokenKey, threading.RLock] = {}
        # asyncio locks belong to one event loop each.
        self._async_fetch_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[TokenKey, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    def peek(self, key: TokenKey) -> str | None:
        """Return the cached token if it is not due for refresh."""
        token = self._tokens.get(key)
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        return None

    def store(self, key: TokenKey, value: str, expires_in: float) -> None:
        margin = min(REFRESH_MARGIN_SECONDS, expires_in / 10)
        self._tokens[key] = _Token(value, self._clock() + expires_in - margin)
        self._recent.setdefault(key, deque(maxlen=_RECENT_TOKENS)).append(value)

    def recent(self, key: TokenKey) -> list[str]:
        """The last tokens issued for ``key``, current one included, whether still valid or not."""
        return list(self._recent.get(key, ()))

    def invalidate(self, key: TokenKey, value: str) -> None:
        """Drop ``value`` after a 401, unless another caller already replaced it."""
        with self._guard:
            token = self._tokens.get(key)
            if token is not None and token.value == value:
                del self._tokens[key]

    def get(self, key: TokenKey, fetch: Callable[[], tuple[str, float]], *, wait: float | None = None) -> str:
        """
        Return a valid token, calling ``fetch`` (→ token, expires_in) at most once at a time per key.

        :param wait: longest time to wait for another thread's fetch (None: as long as it takes).
            When it runs out, this caller fetches a token of its own: ``on_kill`` must not wait
            for the thread it interrupted, which may hold the lock in a slow token exchange.
        """
        token = self.peek(key)
        if token is not None:
            return token
        lock = self._fetch_lock(key)
        if not lock.acquire(timeout=-1 if wait is None else max(0.0, wait)):
            return self._fetch_and_store(key, fetch())
        try:
            return self.peek(key) or self._fetch_and_store(key, fetch())
        finally:
            lock.release()

    def _fetch_and_store(self, key: TokenKey, fetched: tuple[str, float]) -> str:
        token, expires_in = fetched
        self.store(key, token, expires_in)
        return token

    async def aget(self, key: TokenKey, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        """Async :meth:`get`: at most one ``fetch`` at a time per key and event loop."""
        token = self.peek(key)
        if token is not None:
            return token
        async with self._async_fetch_lock(key):
            token = self.peek(key)
            if token is None:
                token, expires_in = await fetch()
                self.store(key, token, expires_in)
            return token

    def _async_fetch_lock(self, key: TokenKey) -> asyncio.Lock:
        with self._guard:
            locks = self._async_fetch_locks.setdefault(asyncio.get_running_loop(), {})
            return locks.setdefault(key, asyncio.Lock())

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()
            self._recent.clear()

    def _fetch_lock(self, key: TokenKey) -> threading.RLock:
        with self._guard:
            return self._fetch_locks.setdefault(key, threading.RLock())


_ALL_CACHES: weakref.WeakSet[TokenCache] = weakref.WeakSet()


def _reset_locks_after_fork() -> None:
    for cache in list(_ALL_CACHES):
        cache._reset_locks()


os.register_at_fork(after_in_child=_reset_locks_after_fork)

#: The process-wide cache.
TOKEN_CACHE = TokenCache()


#: What a secret is replaced with (as Airflow's masker does).
MASK = "***"


def secret_forms(secret: str) -> set[str]:
    """The ways ``secret`` can appear in text: raw, URL-encoded (both styles), repr and JSON escaped."""
    forms = {
        secret,
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret),
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    forms.discard("")
    return forms


class Scrubber:
    """
    Replace every form of the given secrets (case-insensitively: percent-encoding may use
    either case) with :data:`MASK`.

    :param secrets: the client secret and the tokens in use; empty values are ignored.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms = sorted({form for secret in secrets if secret for form in secret_forms(secret)}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, forms)), re.IGNORECASE) if forms else None

    def text(self, value: str | None) -> str | None:
        if value is None or self._pattern is None:
            return value
        return self._pattern.sub(MASK, value)

    def json(self, value: Any) -> Any:
        """A copy of a JSON value with every string (keys too) scrubbed; no recursion, whatever the nesting."""
        if self._pattern is None:
            return value
        root: list[Any] = [None]
        pending: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while pending:
            source, target, slot = pending.pop()
            if isinstance(source, str):
                target[slot] = self.text(source)
            elif isinstance(source, dict):
                mapping: dict[Any, Any] = {}
                target[slot] = mapping
                for key, item in source.items():
                    clean_key = self.text(key) if isinstance(key, str) else key
                    mapping[clean_key] = None
                    pending.append((item, mapping, clean_key))
            elif isinstance(source, list):
                items: list[Any] = [None] * len(source)
                target[slot] = items
                pending.extend((item, items, index) for index, item in enumerate(source))
            else:
                target[slot] = source
        return root[0]

    def error(self, exc: AquaError) -> AquaError:
        """Scrub an error in place (message, codes, job JSON) and return it, to be raised again."""
        exc.message = self.text(exc.message) or ""
        exc.error_code = self.text(exc.error_code)
        exc.request_id = self.text(exc.request_id)
        job = getattr(exc, "job", None)
        if job is not None:
            exc.job = self.json(job)  # type: ignore[attr-defined]
        exc.args = (exc._describe(),)
        return exc


class Log(Protocol):
    """What the clients need of a logger (the hook's ``self.log``)."""

    def info(self, msg: Any, /, *args: Any) -> Any: ...


TOKEN_PATH = "/oauth/token"
TOKEN_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip"}
#: Longest wait of a bounded call (one with a deadline) for another thread's token fetch.
TOKEN_LOCK_WAIT = 0.5


class Credentials:
    """
    The OAuth credentials of one connection, as both HTTP clients use them.

    :param settings: the connection.
    :param log: where a new token and a replaced one are told (the hook's log: the task log).
    """

    def __init__(self, settings: AquaConnectionSettings, log: Log) -> None:
        self.settings = settings
        self.log = log
        self._key = settings.token_cache_key
        self._scrubber_cache: tuple[tuple[str, ...], Scrubber] | None = None

    def token(self, fetch: Callable[[], tuple[str, float]], deadline: float | None = None) -> str:
        """
        The shared token, fetched with ``fetch`` when there is none. A call with a deadline
        waits for another thread's fetch only briefly, then fetches its own: ``on_kill`` must not
        wait for the thread it interrupted, which may be stuck in a slow token exchange while
        holding the lock.
        """
        wait = None if deadline is None else min(TOKEN_LOCK_WAIT, max(0.0, deadline - time.monotonic()) / 2)
        return TOKEN_CACHE.get(self._key, fetch, wait=wait)

    async def atoken(self, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        """Async :meth:`token`."""
        return await TOKEN_CACHE.aget(self._key, fetch)

    def headers(self, token: str, track_id: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Headers of an AQuA call with ``token``, ``extra`` ones last."""
        return {**build_headers(self.settings, token, track_id), **(extra or {})}

    def refused(self, token: str, what: str) -> None:
        """Zuora answered 401 to ``what`` sent with ``token``: drop it, so that the resend gets a new one."""
        self.log.info("Zuora answered 401 to %s: fetching a new OAuth token and retrying once", what)
        TOKEN_CACHE.invalidate(self._key, token)

    def form(self) -> dict[str, str]:
        """The body of the token request."""
        return {
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "grant_type": "client_credentials",
        }

    def read_token_answer(self, answer: HttpAnswer) -> tuple[str, float]:
        """Token and lifetime from the OAuth answer; refused credentials get a message saying so."""
        conn_id = self.settings.conn_id
        try:
            body = parse_answer(answer, what=f"POST {TOKEN_PATH}", required_key="access_token")
        except AquaApiError as exc:
            if exc.status_code not in (400, 401, 403):
                raise
            raise AquaAuthenticationError(
                f"Zuora refused the OAuth client credentials of connection {conn_id!r} "
                f"({exc.message}); check its Client ID and Client Secret",
                status_code=exc.status_code,
                error_code=exc.error_code,
                request_id=exc.request_id,
            ) from None
        token = access_token(body)
        if token is None:
            raise AquaInvalidAnswerError(
                f"Zuora's OAuth answer for connection {conn_id!r} holds no usable access_token "
                "(a token is printable US-ASCII without spaces); its value is not shown",
                status_code=answer.status,
                request_id=answer.request_id,
            )
        expires_in = token_lifetime(body.get("expires_in"))
        self.log.info("Fetched a Zuora OAuth token for connection %s (valid %d s)", conn_id, expires_in)
        return token, expires_in

    def mask(self, token: str) -> None:
        """Register a new token with Airflow's secrets masker, in every form it may take."""
        for form in secret_forms(token):
            mask_secret(form)

    async def amask(self, token: str) -> None:
        """Async :meth:`mask` (a supervisor call that must not block the event loop)."""
        for form in secret_forms(token):
            await amask_secret(form)

    @contextmanager
    def scrubbing(self) -> Iterator[None]:
        """
        Errors raised inside, scrubbed of every form of the client secret and of this
        connection's recent tokens: a server may echo them.
        """
        try:
            yield
        except AquaError as exc:
            self._scrubber().error(exc)
            raise

    def scrubbed(self, value: T) -> T:
        """A JSON result, scrubbed as :meth:`scrubbing` scrubs errors (tokens fetched meanwhile included)."""
        return self._scrubber().json(value)

    def _scrubber(self) -> Scrubber:
        secrets = (self.settings.client_secret, *TOKEN_CACHE.recent(self._key))
        cached = self._scrubber_cache
        if cached is None or cached[0] != secrets:  # a new token: a new pattern
            cached = self._scrubber_cache = (secrets, Scrubber(secrets))
        return cached[1]
