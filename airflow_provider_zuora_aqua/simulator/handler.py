"""The HTTP side: read a request, apply faults, answer (result files streamed from disk), record."""

from __future__ import annotations

import email.utils
import gzip
import json
import time
import traceback
import uuid
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from . import control, errors
from .endpoints import Incoming
from .errors import general_error
from .faults import DROP, DROP_MID, LOST_ANSWER, SLOW, FaultRule
from .recording import RecordedRequest, public_headers
from .replies import GZIP_THRESHOLD, Reply, accepts_gzip, json_reply
from .routing import CONTROL_PREFIX, UNKNOWN, RouteMatch, match_route

if TYPE_CHECKING:
    from .server import AquaHTTPServer

_WRITE_CHUNK = 64 * 1024
_FAULT_MESSAGES = {
    403: (errors.GENERAL_PERMISSION_DENIED, "You do not have permission to perform this operation."),
    404: (errors.GENERAL_NOT_FOUND, "Simulated HTTP 404 fault."),
    429: (errors.GENERAL_LIMIT_EXCEEDED, "Too many requests. Please retry later."),
}


class MalformedRequestError(ValueError):
    """The request cannot be read (framing or content encoding)."""


class AquaRequestHandler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive, every answer carries a Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "ZuoraAquaSimulator/1.0"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every keep-alive exchange.
    disable_nagle_algorithm = True
    server: AquaHTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header: the tenant's clock (skewed or set), whole seconds, as Zuora's servers send it."""
        if timestamp is None:
            timestamp = self.server.simulator.tenant.clock.now().timestamp()
        return email.utils.formatdate(timestamp, usegmt=True)

    def version_string(self) -> str:
        """The Server header, without http.server's Python version suffix."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: benchmarks send thousands of requests."""

    def _serve(self) -> None:
        simulator = self.server.simulator
        arrived = time.time()
        ticket = simulator.log.ticket()
        url = urlsplit(self.path)
        is_control = url.path.startswith(CONTROL_PREFIX)
        match = match_route(self.command, url.path)
        try:
            raw = self._read_body()
        except MalformedRequestError as exc:
            # The framing is unknown, so the connection cannot be reused.
            self.close_connection = True
            reply = json_reply(400, general_error(errors.GENERAL_MALFORMED_REQUEST, str(exc)))
            if not is_control:
                self._record(ticket, arrived, match, b"", reply.status, None)
            self._send(reply)
            return
        if is_control:
            self._send(control.handle(simulator, self.command, url.path, raw, url.query))
            return
        fault = simulator.faults.pick(match.route)
        kind = fault.kind if fault is not None else None
        delay = fault.delay if fault is not None else 0.0
        if kind == DROP:
            self._record(ticket, arrived, match, raw, None, fault)
            self.close_connection = True
            return
        if fault is not None and fault.status:
            reply = _fault_reply(fault)
        elif kind == SLOW and match.route == "submit":
            # The job is created first, then the answer waits (its Idempotency-Key in flight).
            reply = self._answer(match, raw, hold=lambda: time.sleep(delay))
        else:
            if kind == SLOW:
                time.sleep(delay)
            reply = self._answer(match, raw)
        if kind == LOST_ANSWER:
            self._record(ticket, arrived, match, raw, None, fault)
            self.close_connection = True
            return
        # Logged before the answer goes out: a client holding its answer finds it in the log.
        self._record(ticket, arrived, match, raw, reply.status, fault)
        self._send(reply, cut=kind == DROP_MID)

    def _record(
        self, ticket: int, arrived: float, match: RouteMatch, raw: bytes, status: int | None, fault: FaultRule | None
    ) -> None:
        url = urlsplit(self.path)
        submitted = _submitted_json(raw, self.headers.get("Content-Encoding")) if match.route == "submit" else None
        self.server.simulator.log.add(
            ticket,
            RecordedRequest(
                time=arrived,
                method=self.command,
                path=url.path,
                query=url.query,
                route=match.route,
                headers=public_headers(dict(self.headers.items())),
                status=status,
                fault=fault.kind if fault is not None else None,
                json=submitted,
            ),
        )

    def _answer(self, match: RouteMatch, raw: bytes, hold: Callable[[], None] | None = None) -> Reply:
        path = urlsplit(self.path).path
        if match.route == UNKNOWN:
            if match.allowed:
                message = f"Method {self.command} is not supported on {path}."
                error = general_error(errors.GENERAL_UNSUPPORTED_REQUEST, message)
                return json_reply(405, error, {"Allow": ", ".join(match.allowed)})
            return json_reply(404, general_error(errors.GENERAL_NOT_FOUND, f"No resource at {path}."))
        try:
            body = _decode(raw, self.headers.get("Content-Encoding"))
        except MalformedRequestError as exc:
            return json_reply(400, general_error(errors.GENERAL_MALFORMED_REQUEST, str(exc)))
        request = Incoming(self.command, path, self.headers, body)
        try:
            if hold is None:
                return self.server.simulator.api.handle(match, request)
            return self.server.simulator.api.handle(match, request, hold)
        except Exception:  # a simulator bug: say so, but keep serving other clients
            traceback.print_exc()
            return json_reply(500, general_error(errors.GENERAL_INTERNAL_ERROR, "Simulator internal error."))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise MalformedRequestError("Invalid Content-Length header.") from None
        if length < 0:
            raise MalformedRequestError("Invalid Content-Length header.")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                raise MalformedRequestError("Invalid chunked request body.") from None
            if size == 0:
                # Skip any trailer fields up to the blank line that ends the message.
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send(self, reply: Reply, cut: bool = False) -> None:
        """Send ``reply``; ``cut`` sends about half the body, then closes the connection."""
        source = None
        if reply.file is not None:
            try:
                source = open(reply.file.path, "rb")  # closed below, after streaming
            except OSError:  # purged between the answer and now
                reply = json_reply(404, general_error(errors.GENERAL_NOT_FOUND, "File not found."))
        try:
            self._send_open(reply, source, cut)
        finally:
            if source is not None:
                source.close()

    def _send_open(self, reply: Reply, source: BinaryIO | None, cut: bool) -> None:
        body = reply.body
        headers = dict(reply.headers)
        if reply.compressible:
            headers["Vary"] = "Accept-Encoding"
            if len(body) > GZIP_THRESHOLD and accepts_gzip(self.headers.get("Accept-Encoding", "")):
                body = gzip.compress(body)
                headers["Content-Encoding"] = "gzip"
        length = reply.file.length if source is not None and reply.file is not None else len(body)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Zuora-Request-Id", str(uuid.uuid4()))
        track_id = self.headers.get("Zuora-Track-Id")
        if track_id:
            self.send_header("Zuora-Track-Id", track_id)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        # A cut answer keeps its full Content-Length: the client finds the body short.
        count = length // 2 if cut else length
        if cut:
            self.close_connection = True
        if source is not None and reply.file is not None:
            if count:
                # Straight from the page cache to the socket, in constant memory.
                self.connection.sendfile(source, reply.file.offset, count)
            return
        for start in range(0, count, _WRITE_CHUNK):
            self.wfile.write(body[start : min(start + _WRITE_CHUNK, count)])


def _fault_reply(fault: FaultRule) -> Reply:
    status = fault.status or 500
    code, message = _FAULT_MESSAGES.get(status, (errors.GENERAL_INTERNAL_ERROR, f"Simulated HTTP {status} fault."))
    body = general_error(code, message)
    if fault.retry_after is None:
        return json_reply(status, body)
    # Whole seconds as HTTP wants them; a fractional value (fast tests) is sent as is.
    retry_after = int(fault.retry_after) if float(fault.retry_after).is_integer() else fault.retry_after
    return json_reply(status, body, {"Retry-After": str(retry_after)})


def _decode(raw: bytes, content_encoding: str | None) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return raw
    if encoding in ("gzip", "x-gzip"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise MalformedRequestError(f"The gzip request body cannot be decompressed: {exc}") from None
    raise MalformedRequestError(f"Unsupported Content-Encoding: {content_encoding}.")


def _submitted_json(raw: bytes, content_encoding: str | None) -> Any:
    try:
        return json.loads(_decode(raw, content_encoding))
    except ValueError:
        return None
