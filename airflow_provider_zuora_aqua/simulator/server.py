"""``AquaSimulator``: a local stand-in for Zuora's AQuA REST API, served from a thread."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .endpoints import JOB_LIMIT_ANSWERS, AquaApi
from .faults import FaultInjector, make_rule
from .files import FileStore
from .handler import AquaRequestHandler
from .idempotency import IdempotencyStore
from .recording import RecordedRequest, RequestLog
from .sample import load_sample
from .state import AquaState
from .tenant import DEFAULT_TIME_ZONE, Tenant

_STOP_TIMEOUT = 5.0
# Zuora's documented limits: files up to 2,047 MB, kept 3 days; idempotency keys kept 24 hours.
MAX_FILE_BYTES = 2047 * 1024 * 1024
FILE_PURGE_SECONDS = 72 * 3600.0
IDEMPOTENCY_SECONDS = 24 * 3600.0
# serve_forever only notices a shutdown request between polls: a short poll keeps stop()
# fast (tests start and stop hundreds of simulators) at the cost of idle wake-ups.
_POLL_INTERVAL = 0.01


class AquaHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can also cut its open keep-alive connections on stop."""

    daemon_threads = True
    # A benchmark opens about a thousand connections at once.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], simulator: AquaSimulator) -> None:
        self.simulator = simulator
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, AquaRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.host
        self.server_port = int(self.server_address[1])

    @property
    def host(self) -> str:
        """The bound address, as text."""
        host = self.server_address[0]
        return host.decode() if isinstance(host, (bytes, bytearray)) else host

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection, so idle keep-alive handler threads end now."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer are normal under load; anything else is a bug.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class AquaSimulator:
    """Zuora AQuA over HTTP on a local port, for tests, demos and benchmarks.

    ``job_seconds`` is how long a job takes from submit to ``completed``, of which it spends
    ``queue_seconds`` (default ``min(0.5, job_seconds / 10)``) ``submitted``;
    ``token_seconds`` how long an OAuth token lives. ``errors_as_200`` answers the
    job-id refusals with HTTP 200 error bodies instead of 404/400. ``seed`` seeds the
    generator behind rate-based faults. ``concurrent_job_limit`` (None: unlimited)
    refuses submissions once that many stateless (or stateful) jobs are submitted or
    executing, as Zuora documents ("rejects subsequent job requests") without giving the
    shape: ``job_limit_answer="body"`` answers HTTP 200 with error 90028 (saved under the
    submit's Idempotency-Key like any answer), ``"429"`` answers ``429 Too Many Requests``
    with ``Retry-After`` before the key is looked at (not saved, as a gateway would).

    Result files (``GET /v1/files/{fileId}``) are deterministic CSV (with RFC 4180 quoted
    multi-line cells), gzip or zip, written once to a temporary spool and streamed from it
    with ``Range`` support; the spool is deleted on :meth:`stop`. ``file_rows`` (None: 1 to
    1000 rows derived from the query) sets every batch's ``recordCount``. ``segment_rows``
    (None: never) splits a stateful full load with more records into ``segments`` of at most
    that many records. A file larger than ``max_file_bytes`` answers ``403`` with Zuora's
    ``max-object-size`` body; one older than ``file_purge_seconds`` (from its batch's
    completion) answers ``404``. ``file_transport_gzip`` gzips downloads over 1000 bytes for
    clients sending ``Accept-Encoding: gzip`` (no ``Range`` then). A submit's
    ``Idempotency-Key`` answer is kept ``idempotency_seconds``.

    ``tenant`` (:class:`~.tenant.Tenant`) holds the tenant's data: a query on an object that has
    a table there exports its visible matching rows (``where`` evaluated) instead of generated
    ones. ``time_zone`` is the tenant's time zone (ZOQL date-times without an offset are read in
    it; default ``America/Los_Angeles``), ``index_delay`` the default seconds before a write is
    visible to queries. ``max_query_rows`` (None: no limit) stands in for Zuora's 3-hour query
    limit: a batch with more records ends ``aborted``, and its job with it, with
    :data:`~.errors.QUERY_TIME_LIMIT_MESSAGE`. ``clock_skew`` (seconds, default 0) puts the
    tenant's clock that far ahead of the real one (negative: behind): stamps, index visibility,
    job times and every answer's ``Date`` header read it. ``sample_data`` loads seeded Account and
    Subscription rows (:mod:`.sample`, seeded by ``seed``); in-process it is off, so that a test
    starts from an empty tenant.

    ``state``, ``api``, ``faults``, ``files`` and ``log`` are the parts the HTTP handler works
    with; tests should prefer the methods below.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        job_seconds: float = 5.0,
        token_seconds: float = 3599,
        host: str = "127.0.0.1",
        port: int = 0,
        errors_as_200: bool = False,
        seed: int | None = 0,
        concurrent_job_limit: int | None = None,
        job_limit_answer: str = "body",
        queue_seconds: float | None = None,
        file_rows: int | None = None,
        segment_rows: int | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
        file_purge_seconds: float = FILE_PURGE_SECONDS,
        file_transport_gzip: bool = False,
        idempotency_seconds: float = IDEMPOTENCY_SECONDS,
        time_zone: str = DEFAULT_TIME_ZONE,
        index_delay: float = 0.0,
        max_query_rows: int | None = None,
        clock_skew: float = 0.0,
        sample_data: bool = False,
    ) -> None:
        if job_seconds < 0 or token_seconds < 0 or (queue_seconds or 0) < 0:
            raise ValueError("job_seconds, token_seconds and queue_seconds must not be negative")
        _check_count("file_rows", file_rows, minimum=0)
        _check_count("segment_rows", segment_rows, minimum=1)
        _check_count("max_file_bytes", max_file_bytes, minimum=0)
        _check_count("max_query_rows", max_query_rows, minimum=0)
        if index_delay < 0:
            raise ValueError("index_delay must not be negative")
        try:
            self.tenant = Tenant(time_zone, index_delay)
        except (ValueError, LookupError) as exc:  # zoneinfo's errors for unknown zones
            raise ValueError(f"time_zone {time_zone!r} is not a known IANA time zone") from exc
        self.tenant.clock.skew(clock_skew)
        if sample_data:
            load_sample(self.tenant, seed)
        if file_purge_seconds < 0 or idempotency_seconds < 0:
            raise ValueError("file_purge_seconds and idempotency_seconds must not be negative")
        self._address = (host, port)
        self.state = AquaState(
            client_id=client_id,
            client_secret=client_secret,
            job_seconds=job_seconds,
            token_seconds=token_seconds,
            queue_seconds=queue_seconds,
            concurrent_job_limit=concurrent_job_limit,
            file_rows=file_rows,
            segment_rows=segment_rows,
            file_purge_seconds=file_purge_seconds,
            tenant=self.tenant,
            max_query_rows=max_query_rows,
        )
        self.files = FileStore(max_file_bytes)
        if job_limit_answer not in JOB_LIMIT_ANSWERS:
            raise ValueError(
                f"job_limit_answer must be one of {', '.join(JOB_LIMIT_ANSWERS)}, not {job_limit_answer!r}"
            )
        self.api = AquaApi(
            self.state,
            errors_as_200,
            self.files,
            IdempotencyStore(idempotency_seconds),
            file_transport_gzip,
            job_limit_answer=job_limit_answer,
        )
        self.faults = FaultInjector(seed)
        self.log = RequestLog()
        self._server: AquaHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> AquaSimulator:
        """Bind and serve from a daemon thread; return self."""
        if self._server is not None:
            raise RuntimeError("a simulator starts only once; create a new one")
        self._server = AquaHTTPServer(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name="aqua-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, close the listening socket, delete spooled files."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(_STOP_TIMEOUT)
        self._thread = None
        self.files.close()

    def __enter__(self) -> AquaSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.host, self._server.server_port
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the request log, in arrival order."""
        return self.log.snapshot()

    def clear_requests(self) -> None:
        """Empty the request log."""
        self.log.clear()

    def requests_for(self, route: str, method: str | None = None) -> list[RecordedRequest]:
        """The logged requests on ``route`` (and ``method``, if given)."""
        return [r for r in self.requests if r.route == route and (method is None or r.method == method.upper())]

    def add_fault(
        self,
        route: str,
        kind: str | int,
        *,
        count: int | None = None,
        rate: float | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
    ) -> None:
        """Inject a fault on ``route`` (or ``"*"``).

        ``kind``: ``403``, ``404``, ``429``, a 5xx code, ``drop``, ``slow``, ``drop_mid`` or
        ``lost_answer``. See :mod:`airflow_provider_zuora_aqua.simulator.faults` for the semantics.
        """
        self.faults.add(make_rule(route, kind, count=count, rate=rate, retry_after=retry_after, delay=delay))

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.faults.clear()

    def job_ids(self) -> list[str]:
        """Ids of every job submitted so far, in submit order."""
        return self.state.job_ids()

    def jobs(self) -> list[dict[str, Any]]:
        """The JSON of every job submitted so far, as ``GET`` would answer it now, in submit order."""
        return self.state.jobs()

    def purge_files(self, job_id: str | None = None) -> int:
        """Make the result files of one job (default: of every job so far) answer 404 from now on.

        Deletes their spooled bytes too. Return how many file ids that was; KeyError if
        ``job_id`` is unknown.
        """
        file_ids = self.state.purge_files(job_id)
        self.files.discard(file_ids)
        return len(file_ids)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job JSON exactly as ``GET`` would answer it now; KeyError if unknown."""
        return self.state.job(job_id)

    def finish_job(self, job_id: str, status: str, message: str = "") -> None:
        """Force a terminal status (completed, error, aborted, cancelled) as if Zuora did it.

        Every batch gets ``status`` and ``message``; completed batches get their files.
        Works on a job that already finished on its own too. KeyError if the job is unknown.
        """
        self.state.finish(job_id, status, message)

    def expire_tokens(self) -> int:
        """Refuse every token issued so far from now on; return how many that was."""
        return self.state.expire_tokens()

    @property
    def issued_tokens(self) -> list[str]:
        """Every token issued so far, to check that none leaks into logs."""
        return self.state.issued_tokens

    @property
    def tokens_issued(self) -> int:
        """How many tokens ``/oauth/token`` has issued."""
        return self.state.tokens_issued


def _check_count(name: str, value: int | None, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"{name} must be an integer of at least {minimum}, not {value!r}")
