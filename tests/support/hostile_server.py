"""
A scriptable hostile HTTP server on 127.0.0.1, for the hardening tests.

Each route answers what the test sets: any status, headers and body, a gzip-encoded body (a
"bomb" when the body is huge and repetitive), a body or a whole response dripped one byte at a
time, an answer held until the test releases it, a dropped connection, or an answer computed
from the request (to echo its body or headers). Every request is recorded. It also serves as a
recording proxy: a ``CONNECT`` or an absolute-URL request is recorded like any other.

Unscripted routes behave like a well-mannered AQuA: ``POST /oauth/token`` issues a token and
``GET/DELETE /v1/batch-query/jobs/{id}`` answer the job JSON.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JOB_ID = "e20b07474688ad5001468daf10e501de"
TOKEN = "hostile-token-5d1e0c"


@dataclass
class Reply:
    """
    One scripted answer.

    :param status: HTTP status.
    :param body: the body, already encoded (see :func:`json_body` and :func:`gzip_bomb`).
    :param headers: extra headers; ``Content-Length`` is added unless they set ``Transfer-Encoding``
        (then the body is sent as it is: the test frames it, see :func:`chunked`). With
        ``Connection: close`` the connection is closed after the body, however long
        ``Content-Length`` said it was.
    :param drip_seconds: pause between two body bytes (the status line and headers go at once).
    :param drip_everything: drip the status line and headers too, one byte per ``drip_seconds``.
    :param hold: wait for this event before answering (released by the test or at shutdown).
    :param drop: close the connection without answering.
    :param reset_after: send the status line, the headers and this many bytes of the body, then
        reset the connection (TCP RST): an answer broken off midway.
    :param drip_bytes: how many body bytes go out per ``drip_seconds`` pause.

    ``sent`` counts the body bytes written so far (a dripped answer the client gave up on stops short).
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip_seconds: float = 0.0
    drip_everything: bool = False
    hold: threading.Event | None = None
    drop: bool = False
    reset_after: int | None = None
    drip_bytes: int = 1
    sent: int = 0


@dataclass(frozen=True)
class Recorded:
    """A request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


Route = Callable[[Recorded], Reply] | Reply | list[Reply]


def json_body(value: Any) -> bytes:
    return json.dumps(value).encode()


def job_json(status: str = "executing", job_id: str = JOB_ID, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "status": status, "batches": [], **fields}


def gzip_bomb(decoded_bytes: int, prefix: bytes = b'{"id": "' + JOB_ID.encode() + b'", "pad": "') -> bytes:
    """A gzip member that decodes to ``decoded_bytes`` of JSON (a padded job), built without holding it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(prefix)]
    chunk = b" " * (1024 * 1024)
    remaining = decoded_bytes - len(prefix) - 2
    while remaining > 0:
        parts.append(compressor.compress(chunk[: min(remaining, len(chunk))]))
        remaining -= len(chunk)
    parts.append(compressor.compress(b'"}'))
    parts.append(compressor.flush())
    return b"".join(parts)


def chunked(body: bytes, size: int = 64 * 1024, *, complete: bool = True) -> bytes:
    """``body`` in HTTP/1.1 chunked framing, ``size`` bytes a chunk; without the last chunk unless ``complete``."""
    framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in _pieces(body, size))
    return framed + b"0\r\n\r\n" if complete else framed


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def gzipped(reply: Reply) -> Reply:
    """The same reply with its body gzip-encoded (``Content-Encoding: gzip``)."""
    reply.body = gzip.compress(reply.body)
    reply.headers = {**reply.headers, "Content-Encoding": "gzip"}
    return reply


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up (a refused answer is not read to its end): no traceback
        super().handle_error(request, client_address)


class HostileServer:
    """
    The server; use it as a context manager.

    :param token: the access token the default token route issues.
    """

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.requests: list[Recorded] = []
        self._routes: dict[tuple[str, str], Route] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._holds: list[threading.Event] = []
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, name="hostile-server", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, method: str, path: str, reply: Route) -> None:
        """
        Script a route: a :class:`Reply`, a list of them (one per request, the last one repeats),
        or a function of the :class:`Recorded` request. ``path`` ``"*"`` matches every path.
        """
        with self._lock:
            self._routes[(method.upper(), path)] = list(reply) if isinstance(reply, list) else reply

    def requests_to(self, method: str, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and (path is None or r.path == path)]

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        for hold in self._holds:
            hold.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _reply_for(self, request: Recorded) -> Reply:
        with self._lock:
            route = self._routes.get((request.method, request.path)) or self._routes.get((request.method, "*"))
            if isinstance(route, list):
                route = route.pop(0) if len(route) > 1 else route[0]
        if route is None:
            return self._default(request)
        reply = route(request) if callable(route) else route
        if reply.hold is not None:
            self._holds.append(reply.hold)
        return reply

    def _default(self, request: Recorded) -> Reply:
        if request.method == "POST" and request.path == "/oauth/token":
            return Reply(body=json_body({"access_token": self.token, "token_type": "bearer", "expires_in": 3599}))
        prefix = "/v1/batch-query/jobs/"
        if request.path.startswith(prefix) and request.method in ("GET", "DELETE"):
            status = "cancelled" if request.method == "DELETE" else "executing"
            return Reply(body=json_body(job_json(status, request.path[len(prefix) :])))
        return Reply(status=404, body=json_body({"message": "not found"}))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Recorded(
                    self.command, self.path, dict(self.headers.items()), self.rfile.read(length), time.monotonic()
                )
                with server._lock:
                    server.requests.append(request)
                reply = server._reply_for(request)
                if reply.hold is not None:
                    reply.hold.wait(60)
                if reply.drop or server._stopping.is_set():
                    self.close_connection = True
                    return
                self._write(reply)

            def _write(self, reply: Reply) -> None:
                head = [f"HTTP/1.1 {reply.status} Hostile"]
                headers = {"Content-Type": "application/json", **reply.headers}
                if "Transfer-Encoding" not in headers:  # a chunked body (already framed by the test) has no length
                    headers.setdefault("Content-Length", str(len(reply.body)))
                head += [f"{name}: {value}" for name, value in headers.items()]
                raw_head = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
                try:
                    if reply.reset_after is not None:
                        self._reset(raw_head + reply.body[: reply.reset_after])
                    elif reply.drip_everything:
                        self._drip(raw_head + reply.body, reply.drip_seconds)
                    else:
                        self.wfile.write(raw_head)
                        self.wfile.flush()
                        self._drip(reply.body, reply.drip_seconds, reply.drip_bytes, reply)
                except OSError:
                    self.close_connection = True
                if headers.get("Connection", "").lower() == "close":  # an orderly end (FIN), whatever the body said
                    self.close_connection = True

            def _reset(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                # Linger 0: closing sends a RST instead of the orderly FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _drip(self, data: bytes, pause: float, step: int = 1, reply: Reply | None = None) -> None:
                if not pause:
                    self.wfile.write(data)
                    self.wfile.flush()
                    if reply is not None:
                        reply.sent += len(data)
                    return
                for index in range(0, len(data), step):
                    if server._stopping.wait(pause):
                        self.close_connection = True
                        return
                    self.wfile.write(data[index : index + step])
                    self.wfile.flush()
                    if reply is not None:
                        reply.sent += len(data[index : index + step])

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_CONNECT = _serve

        return Handler


class FileVersions:
    """
    A route serving one result file that may change between requests, with ``ETag`` and
    ``Last-Modified`` and the ``Range``/``If-Range`` rules of RFC 9110 (or, with
    ``honour_if_range=False``, a server that ignores ``If-Range``).

    :param versions: the file's bytes, one per version; ``change()`` moves to the next.
    :param cut_first_after: the first answer is reset after this many body bytes.
    :param validator: ``"etag"``, ``"last-modified"`` or None (no validator sent).
    """

    def __init__(
        self,
        *versions: bytes,
        cut_first_after: int | None = None,
        validator: str | None = "etag",
        honour_if_range: bool = True,
        media_type: str = "text/csv;charset=UTF-8",
    ) -> None:
        self.versions = list(versions)
        self.current = 0
        self._cut = cut_first_after
        self._validator = validator
        self._honour = honour_if_range
        self._media_type = media_type

    def change(self) -> None:
        self.current += 1

    def _tags(self, version: int) -> dict[str, str]:
        if self._validator == "etag":
            return {"ETag": f'"v{version}"'}
        if self._validator == "last-modified":
            return {"Last-Modified": f"Tue, 0{version + 1} Dec 2026 10:00:00 GMT"}
        return {}

    def __call__(self, request: Recorded) -> Reply:
        data = self.versions[self.current]
        tags = self._tags(self.current)
        headers = {"Content-Type": self._media_type, "Accept-Ranges": "bytes", **tags}
        cut, self._cut = self._cut, None
        wanted = request.headers.get("Range", "")
        if_range = request.headers.get("If-Range")
        same = if_range is None or if_range in tags.values() or not self._honour
        if wanted.startswith("bytes=") and wanted.endswith("-") and same:
            start = int(wanted[len("bytes=") : -1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return Reply(status=206, body=data[start:], headers=headers)
        reply = Reply(body=data, headers=headers)
        if cut is not None:
            reply.headers["Content-Length"] = str(len(data))
            reply.reset_after = cut
        return reply


def serve() -> Iterator[HostileServer]:
    """Generator for a pytest fixture."""
    with HostileServer() as server:
        yield server
