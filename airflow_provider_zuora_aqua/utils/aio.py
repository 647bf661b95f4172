"""One aiohttp session per event loop, shared by every trigger that runs on it."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

#: Connections one event loop keeps to Zuora at most, however many triggers poll.
MAX_CONNECTIONS = 100


class _Shared:
    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS))
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
