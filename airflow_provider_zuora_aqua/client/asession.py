"""Async plumbing shared by the triggers of one event loop: an HTTP session and a lookup cache."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import aiohttp

T = TypeVar("T")

#: Connections one event loop keeps to Zuora at most, however many triggers poll.
MAX_CONNECTIONS = 100


class _Shared:
    def __init__(self) -> None:
        # Imported here, not at module top: DAG files import this module at every parse.
        import aiohttp

        # Answers are decoded by client.wire, within its size cap, as on the sync path; proxies
        # come from client.session.proxy_for, the rule requests applies, not from trust_env.
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
