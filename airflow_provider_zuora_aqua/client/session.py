"""
The HTTP clients' setup: the proxy rule both clients share, and a ``requests`` session whose
exchanges can end at a wall-clock deadline.

``requests`` only bounds each socket read, so a server that drips one byte at a time keeps a
call alive indefinitely. Inside :class:`ExchangeDeadline`, the session's connections are shut
down when the deadline passes, whatever phase the exchange is in (headers or body), which ends
the blocked read. Outside it (file downloads, which may legitimately run long) nothing changes.

Imported only where a call is made: ``requests`` and ``urllib3`` are not loaded at DAG parse.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils
import urllib3.connection
import urllib3.connectionpool
import urllib3.poolmanager

from airflow_provider_zuora_aqua.client.settings import is_loopback

if TYPE_CHECKING:
    from types import TracebackType

_local = threading.local()


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


def new_session() -> requests.Session:
    """A session that applies :func:`proxy_for` and honours :class:`ExchangeDeadline`."""
    session = requests.Session()
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class ExchangeDeadline:
    """
    Within this block, the current thread's exchanges on a :func:`new_session` session end
    after ``seconds``: the connection is shut down and the pending read fails.

    :param seconds: wall-clock bound of the exchange, from entering the block.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self._lock = threading.Lock()
        self._connection: urllib3.connection.HTTPConnection | None = None
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> ExchangeDeadline:
        _local.exchange = self
        self._timer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        with self._lock:
            self._connection = None
        _local.exchange = None

    def watch(self, connection: urllib3.connection.HTTPConnection) -> None:
        with self._lock:
            self._connection = connection
            fired = self.fired
        if fired:
            _shut(connection)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            connection = self._connection
        if connection is not None:
            _shut(connection)


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
