"""Hook for Zuora AQuA (Aggregate Query API): the one place that speaks HTTP to Zuora."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity
from asgiref.sync import sync_to_async

from airflow_provider_zuora_aqua.client.asession import AsyncTTLCache, shared_client_session
from airflow_provider_zuora_aqua.client.auth import TOKEN_CACHE, Scrubber, secret_forms
from airflow_provider_zuora_aqua.client.retry import retry_policy
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings
from airflow_provider_zuora_aqua.client.wire import (
    IDEMPOTENCY_KEY_HEADER,
    READ_CHUNK_BYTES,
    REQUEST_ID_HEADER,
    AnswerReader,
    HttpAnswer,
    access_token,
    build_headers,
    decode_prefix,
    parse_answer,
    parse_job_answer,
    token_lifetime,
    validate_idempotency_key,
    validate_job_id,
    validate_track_id,
)
from airflow_provider_zuora_aqua.compat import BaseHook, amask_secret, mask_secret
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaError,
    AquaIdempotencyKeyReusedError,
    AquaInvalidAnswerError,
    AquaJobAlreadyFinishedError,
    AquaRateLimitError,
    AquaServerError,
    AquaSubmitInProgressError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus
from airflow_provider_zuora_aqua.results.receiver import (
    CHUNK_BYTES,
    FILES_PATH,
    MAX_ERROR_BODY,
    FileReceiver,
    download_headers,
    file_error,
    validate_file_id,
)
from airflow_provider_zuora_aqua.results.staging import StagedFile, resolve_destination

if TYPE_CHECKING:
    import aiohttp
    import requests
    from airflow.sdk import ObjectStoragePath

T = TypeVar("T")

TOKEN_PATH = "/oauth/token"
JOBS_PATH = "/v1/batch-query/jobs"
SUBMIT_PATH = "/v1/batch-query/"
_CONNECT_TIMEOUT = 10.0
#: Longest wait of a bounded call (``max_seconds``) for another thread's token fetch.
_TOKEN_LOCK_WAIT = 0.5
#: Seconds a connection test may wait for Zuora (the UI's Test action should answer fast).
_TEST_CONNECTION_TIMEOUT = 10.0
_TOKEN_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip"}
#: Connection settings looked up by triggers, per connection id.
_ASYNC_SETTINGS: AsyncTTLCache[AquaConnectionSettings] = AsyncTTLCache(ttl=60.0)


class ZuoraAquaHook(BaseHook):
    """
    Interact with Zuora AQuA: OAuth token, submit, read and cancel jobs.

    One OAuth token per connection is shared by all hooks and threads of the process and
    refreshed shortly before it expires; on a ``401`` the hook fetches a new token once and
    sends the call once more. Connection errors, ``429`` (honouring ``Retry-After``) and ``5xx``
    are retried with backoff, bounded by the connection's ``max_retries`` and
    ``retry_max_seconds`` extras; other ``4xx`` answers are final.

    :param zuora_conn_id: The Airflow connection of type ``zuora_aqua``.
    """

    conn_name_attr = "zuora_conn_id"
    default_conn_name = "zuora_aqua_default"
    conn_type = "zuora_aqua"
    hook_name = "Zuora AQuA"

    def __init__(self, zuora_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.zuora_conn_id = zuora_conn_id
        #: ``Zuora-Request-Id`` of the last answer, for error reports (support asks for it).
        self.last_request_id: str | None = None
        #: How many times the last sync call was sent (more than 1 after retries).
        self.last_attempts = 0

    @cached_property
    def settings(self) -> AquaConnectionSettings:
        """The validated connection; the client secret is registered with the secrets masker."""
        settings = AquaConnectionSettings.from_connection(self.get_connection(self.zuora_conn_id))
        for form in secret_forms(settings.client_secret):  # also URL-encoded, as the token form sends it
            mask_secret(form)
        return settings

    def with_new_session(self) -> ZuoraAquaHook:
        """
        The same connection with its own HTTP session.

        For ``on_kill``: it runs in a signal handler that may have interrupted a request of this
        hook, and must neither reuse that session nor look the connection up. The settings are
        shared when this hook has them; otherwise the new hook looks them up when first used,
        which is in the thread that makes the call, not in the handler.
        """
        hook = type(self)(self.zuora_conn_id)
        if "settings" in self.__dict__:
            hook.__dict__["settings"] = self.__dict__["settings"]
        return hook

    @cached_property
    def _session(self) -> requests.Session:
        # The HTTP clients are imported where they are used: DAG files import this module at
        # every parse, and aiohttp and requests would add hundreds of milliseconds to each.
        from airflow_provider_zuora_aqua.client.session import new_session

        return new_session()

    def get_conn(self) -> requests.Session:
        """Return the HTTP session the hook uses."""
        return self._session

    def get_access_token(self) -> str:
        """Return the shared OAuth token of this connection, fetching one when needed."""
        return tenacity.Retrying(**retry_policy(self.settings))(self._cached_token)

    def get_job(self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        """
        Return the job JSON (``GET /v1/batch-query/jobs/{jobid}``).

        :param max_seconds: bound on the whole call, retries included.
        :raises AquaJobNotFoundError: no job has this id.
        """
        job_id = validate_job_id(job_id)
        deadline = _deadline(max_seconds)
        return self._request("GET", f"{JOBS_PATH}/{job_id}", job_id=job_id, track_id=track_id, deadline=deadline)

    def cancel_job(
        self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None
    ) -> dict[str, Any]:
        """
        Cancel a job (``DELETE /v1/batch-query/jobs/{jobid}``) and return the job JSON.

        Zuora refuses to cancel a finished job, in a shape it does not document (an HTTP error
        or an HTTP 200 error body). On a refusal the hook reads the job again: a job in a
        terminal status raises :class:`AquaJobAlreadyFinishedError` with that job's JSON.

        :param max_seconds: bound on the whole call, retries included, for callers that must
            finish quickly (``on_kill`` has a few seconds before SIGKILL).
        :raises AquaJobAlreadyFinishedError: the job had already finished.
        :raises AquaJobNotFoundError: no job has this id.
        """
        job_id = validate_job_id(job_id)
        path = f"{JOBS_PATH}/{job_id}"
        deadline = _deadline(max_seconds)
        self.log.info("Cancelling AQuA job %s", job_id)
        try:
            job = self._request("DELETE", path, job_id=job_id, track_id=track_id, deadline=deadline)
        except (AquaAuthenticationError, AquaRateLimitError, AquaServerError):
            raise
        except AquaApiError as refusal:
            resent = self.last_attempts > 1
            job = self._request("GET", path, job_id=job_id, track_id=track_id, deadline=deadline)
            # A 2xx without job JSON (e.g. 204) accepted the cancel. A refusal of a resent DELETE
            # with the job now cancelled means an earlier attempt got through unanswered.
            accepted = (200 <= (refusal.status_code or 0) < 300 and refusal.error_code is None) or (
                resent and AquaJobStatus.normalize(job.get("status")) == AquaJobStatus.CANCELLED
            )
            if not accepted:
                if not AquaJobStatus.is_terminal(job.get("status")):
                    raise
                raise AquaJobAlreadyFinishedError(
                    f"AQuA job {job_id} already finished with status {job.get('status')!r}; nothing to cancel",
                    job=job,
                    status_code=refusal.status_code,
                    error_code=refusal.error_code,
                    request_id=refusal.request_id,
                ) from None
        status = job.get("status")
        if AquaJobStatus.is_terminal(status) and AquaJobStatus.normalize(status) != AquaJobStatus.CANCELLED:
            raise AquaJobAlreadyFinishedError(
                f"AQuA job {job_id} already finished with status {status!r}; nothing to cancel", job=job
            )
        self.log.info("AQuA job %s is now %s", job_id, status)
        return job

    def cancel_job_if_running(
        self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None
    ) -> dict[str, Any]:
        """
        Idempotent :meth:`cancel_job`: a job that had already finished is not an error.

        For the callers that only need the job stopped (``on_kill``, the timeout path, the
        failure callback). Returns the job JSON either way.
        """
        try:
            return self.cancel_job(job_id, track_id=track_id, max_seconds=max_seconds)
        except AquaJobAlreadyFinishedError as exc:
            self.log.info("%s", exc)
            return exc.job

    def submit_job(
        self,
        body: dict[str, Any],
        *,
        track_id: str | None = None,
        idempotency_key: str | None = None,
        max_seconds: float | None = None,
    ) -> dict[str, Any]:
        """
        Submit a job (``POST /v1/batch-query/``) and return the job JSON with its ``id``.

        With an ``idempotency_key`` (sent as ``Idempotency-Key``, at most 255 characters) the
        submit is idempotent for 24 hours: Zuora answers a resend with the job the first request
        created. So a lost answer (read timeout, dropped connection, ``5xx``) is sent again within
        the retry policy, and a ``409`` (the first request with the key is still in progress) is
        waited out. ``422`` (the key was used with another body) raises
        :class:`AquaIdempotencyKeyReusedError`.

        Without a key a submit is not idempotent: it is sent again only when the request cannot
        have reached Zuora (no connection made, ``429``, ``503``). After a read timeout or a
        dropped connection the job may exist, so the :class:`AquaTransportError` is raised.

        :param max_seconds: bound on the whole call, retries included.
        """
        deadline = _deadline(max_seconds)
        if idempotency_key is None:
            return self._request("POST", SUBMIT_PATH, json=body, track_id=track_id, idempotent=False, deadline=deadline)
        headers = {IDEMPOTENCY_KEY_HEADER: validate_idempotency_key(idempotency_key)}
        try:
            return self._request(
                "POST",
                SUBMIT_PATH,
                json=body,
                track_id=track_id,
                extra_headers=headers,
                keyed_submit=True,
                deadline=deadline,
            )
        except AquaApiError as exc:
            if exc.status_code != 422:
                raise
            raise AquaIdempotencyKeyReusedError(
                f"Zuora refused the submit: its Idempotency-Key {idempotency_key!r} was already used with a "
                f"different request body ({exc.message}). Zuora keeps a key for 24 hours; send this body "
                "with a new key",
                status_code=exc.status_code,
                error_code=exc.error_code,
                request_id=exc.request_id,
            ) from None

    async def aget_job(self, job_id: str, *, track_id: str | None = None) -> dict[str, Any]:
        """
        Async :meth:`get_job` for triggers: nothing blocks the event loop, token fetch and
        connection lookup included. Same token cache, headers, retries and errors.
        """
        job_id = validate_job_id(job_id)
        return await self._arequest("GET", f"{JOBS_PATH}/{job_id}", job_id=job_id, track_id=track_id)

    async def acancel_job_if_running(
        self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None
    ) -> dict[str, Any]:
        """
        Async :meth:`cancel_job_if_running`, for triggers.

        Runs the one cancel routine in a worker thread, so the event loop never blocks and the
        cancel logic stays in one place; the connection is looked up without blocking first.
        An asgiref thread: before Airflow 3.3 a supervisor call made in it (masking a new token)
        must go through the event loop, which only ``sync_to_async`` arranges.
        """
        await self._asettings()
        cancel = sync_to_async(self.cancel_job_if_running, thread_sensitive=False)
        return await cancel(job_id, track_id=track_id, max_seconds=max_seconds)

    async def _asettings(self) -> AquaConnectionSettings:
        """
        :attr:`settings`, looked up without blocking (``aget_connection`` masks the secret).

        Shared by the triggers of a process for a minute: hundreds of triggers of one
        connection make one lookup, and an edited connection applies within a minute.
        """
        if "settings" not in self.__dict__:
            self.__dict__["settings"] = await _ASYNC_SETTINGS.get(self.zuora_conn_id, self._aload_settings)
        return self.settings

    async def _aload_settings(self) -> AquaConnectionSettings:
        connection = await self.aget_connection(self.zuora_conn_id)
        # Reading the extras masks them with a sync supervisor call, which Airflow 3.0 refuses on
        # the event loop: read them in a worker thread.
        return await sync_to_async(AquaConnectionSettings.from_connection)(connection)

    async def _arequest(
        self, method: str, path: str, *, job_id: str | None = None, track_id: str | None = None
    ) -> dict[str, Any]:
        """Async :meth:`_request`: one AQuA call with token, headers, retries and error mapping."""
        track_id = validate_track_id(track_id)
        settings = await self._asettings()
        async with shared_client_session() as session:

            async def attempt() -> dict[str, Any]:
                answer = await self._asend_authenticated(session, method, path, track_id=track_id)
                self.last_request_id = answer.request_id
                return parse_job_answer(answer, what=f"{method} {path}", job_id=job_id)

            return await tenacity.AsyncRetrying(**retry_policy(settings))(self._ascrubbed(attempt))

    async def _asend_authenticated(
        self, session: aiohttp.ClientSession, method: str, path: str, *, track_id: str | None
    ) -> HttpAnswer:
        """Async :meth:`_send_authenticated`."""
        token = await self._acached_token(session)
        answer = await self._asend(session, method, path, headers=build_headers(self.settings, token, track_id))
        if answer.status != 401:
            return answer
        self.log.info("Zuora answered 401 to %s %s: fetching a new OAuth token and retrying once", method, path)
        TOKEN_CACHE.invalidate(self.settings.token_cache_key, token)
        token = await self._acached_token(session)
        return await self._asend(session, method, path, headers=build_headers(self.settings, token, track_id))

    async def _acached_token(self, session: aiohttp.ClientSession) -> str:
        return await TOKEN_CACHE.aget(self.settings.token_cache_key, lambda: self._afetch_token(session))

    async def _afetch_token(self, session: aiohttp.ClientSession) -> tuple[str, float]:
        async def fetch() -> tuple[str, float]:
            answer = await self._asend(session, "POST", TOKEN_PATH, headers=_TOKEN_HEADERS, data=self._token_form())
            return self._read_token_answer(answer)

        token, expires_in = await self._ascrubbed(fetch)()
        for form in secret_forms(token):
            await amask_secret(form)
        return token, expires_in

    async def _asend(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        data: dict[str, str] | None = None,
    ) -> HttpAnswer:
        """Async :meth:`_send` with aiohttp: the same bounds, proxy rule and answer reading."""
        import aiohttp

        from airflow_provider_zuora_aqua.client.session import proxy_for

        seconds = self._exchange_seconds(None)
        timeout = aiohttp.ClientTimeout(sock_connect=min(_CONNECT_TIMEOUT, seconds), total=seconds)
        url = f"{self.settings.base_url}{path}"
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=data,
                timeout=timeout,
                allow_redirects=False,
                proxy=proxy_for(url),
            ) as response:
                reader = AnswerReader(
                    response.status, response.headers, what=f"{method} {path}", deadline=time.monotonic() + seconds
                )
                async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                    reader.feed(chunk)
                return HttpAnswer(response.status, response.headers, reader.finish())
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise AquaTransportError(
                f"{method} {path} to {self.settings.base_url} failed: {type(exc).__name__}: {exc}",
                request_sent=not isinstance(exc, aiohttp.ClientConnectorError),
            ) from None

    def test_connection(self) -> tuple[bool, str]:
        """
        Fetch a new token, for the Test action of the connections UI and ``airflow connections test``.

        One attempt with a short timeout and no retries, so an unreachable host fails within
        seconds; the shared token cache is bypassed so that the test really reaches Zuora.
        """
        try:
            probe = self.with_new_session()
            probe.__dict__["settings"] = dataclasses.replace(
                self.settings, max_retries=0, timeout=min(self.settings.timeout, _TEST_CONNECTION_TIMEOUT)
            )
            probe._fetch_token(deadline=None)
        except Exception as exc:
            return False, str(exc)
        return True, f"Connected to {self.settings.base_url}: Zuora issued an OAuth token."

    def _request(
        self,
        method: str,
        path: str,
        *,
        job_id: str | None = None,
        json: dict[str, Any] | None = None,
        track_id: str | None = None,
        idempotent: bool = True,
        deadline: float | None = None,
        extra_headers: dict[str, str] | None = None,
        keyed_submit: bool = False,
    ) -> dict[str, Any]:
        """
        Send one AQuA call with token, headers, retries and error mapping.

        :param keyed_submit: a submit with an ``Idempotency-Key``: a ``409`` means its first
            request is still in progress, so it is waited out and sent again.
        """
        track_id = validate_track_id(track_id)
        max_seconds = None if deadline is None else max(0.0, deadline - time.monotonic())

        self.last_attempts = 0

        def attempt() -> dict[str, Any]:
            self.last_attempts += 1
            answer = self._send_authenticated(
                method, path, json=json, track_id=track_id, deadline=deadline, extra_headers=extra_headers
            )
            self.last_request_id = answer.request_id
            try:
                return parse_job_answer(answer, what=f"{method} {path}", job_id=job_id)
            except AquaApiError as exc:
                if not (keyed_submit and exc.status_code == 409):
                    raise
                raise AquaSubmitInProgressError(
                    f"Zuora is still processing an earlier submit with the same Idempotency-Key ({exc.message})",
                    status_code=exc.status_code,
                    error_code=exc.error_code,
                    request_id=exc.request_id,
                ) from None

        return tenacity.Retrying(**retry_policy(self.settings, idempotent=idempotent, max_seconds=max_seconds))(
            self._scrubbed(attempt)
        )

    def _send_authenticated(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None,
        track_id: str | None,
        deadline: float | None,
        extra_headers: dict[str, str] | None = None,
    ) -> HttpAnswer:
        """Send with the shared token; on a 401, replace the token once and send once more."""

        def send(token: str) -> HttpAnswer:
            headers = {**build_headers(self.settings, token, track_id), **(extra_headers or {})}
            return self._send(method, path, headers=headers, json=json, deadline=deadline)

        token = self._cached_token(deadline)
        answer = send(token)
        if answer.status != 401:
            return answer
        self.log.info("Zuora answered 401 to %s %s: fetching a new OAuth token and retrying once", method, path)
        TOKEN_CACHE.invalidate(self.settings.token_cache_key, token)
        return send(self._cached_token(deadline))

    def _cached_token(self, deadline: float | None = None) -> str:
        """
        The shared token. A call with a deadline waits for another thread's token fetch only
        briefly, then fetches its own: ``on_kill`` must not wait for the thread it interrupted,
        which may be stuck in a slow token exchange while holding the lock.
        """
        wait = None if deadline is None else min(_TOKEN_LOCK_WAIT, max(0.0, deadline - time.monotonic()) / 2)
        return TOKEN_CACHE.get(self.settings.token_cache_key, lambda: self._fetch_token(deadline), wait=wait)

    def _fetch_token(self, deadline: float | None) -> tuple[str, float]:
        def fetch() -> tuple[str, float]:
            answer = self._send("POST", TOKEN_PATH, headers=_TOKEN_HEADERS, data=self._token_form(), deadline=deadline)
            return self._read_token_answer(answer)

        token, expires_in = self._scrubbed(fetch)()
        for form in secret_forms(token):
            mask_secret(form)
        return token, expires_in

    def _scrubber(self) -> Scrubber:
        return Scrubber([self.settings.client_secret, *TOKEN_CACHE.recent(self.settings.token_cache_key)])

    def _scrubbed(self, call: Callable[[], T]) -> Callable[[], T]:
        """
        ``call``, with its errors and its JSON result scrubbed of every form of the client secret
        and of this connection's recent tokens: a server may echo them (see :mod:`.client.auth`).
        """

        def scrubbed() -> T:
            try:
                result = call()
            except AquaError as exc:
                self._scrubber().error(exc)
                raise
            return self._scrubber().json(result)

        return scrubbed

    def _ascrubbed(self, call: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """Async :meth:`_scrubbed`."""

        async def scrubbed() -> T:
            try:
                result = await call()
            except AquaError as exc:
                self._scrubber().error(exc)
                raise
            return self._scrubber().json(result)

        return scrubbed

    def _token_form(self) -> dict[str, str]:
        return {
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "grant_type": "client_credentials",
        }

    def _read_token_answer(self, answer: HttpAnswer) -> tuple[str, float]:
        """Token and lifetime from the OAuth answer; refused credentials get a message saying so."""
        try:
            body = parse_answer(answer, what=f"POST {TOKEN_PATH}", required_key="access_token")
        except AquaApiError as exc:
            if exc.status_code not in (400, 401, 403):
                raise
            raise AquaAuthenticationError(
                f"Zuora refused the OAuth client credentials of connection {self.settings.conn_id!r} "
                f"({exc.message}); check its Client ID and Client Secret",
                status_code=exc.status_code,
                error_code=exc.error_code,
                request_id=exc.request_id,
            ) from None
        token = access_token(body)
        if token is None:
            raise AquaInvalidAnswerError(
                f"Zuora's OAuth answer for connection {self.settings.conn_id!r} holds no usable access_token "
                "(a token is printable US-ASCII without spaces); its value is not shown",
                status_code=answer.status,
                request_id=answer.request_id,
            )
        expires_in = token_lifetime(body.get("expires_in"))
        self.log.info("Fetched a Zuora OAuth token for connection %s (valid %d s)", self.settings.conn_id, expires_in)
        return token, expires_in

    def _send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        json: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> HttpAnswer:
        """
        One HTTP exchange, bounded: it ends within the connection's ``timeout`` (or ``deadline``)
        of wall-clock time, and its body within the answer cap of
        :mod:`~airflow_provider_zuora_aqua.client.wire`, decoded or not.
        Transport failures become :class:`AquaTransportError`.
        """
        import requests
        import urllib3.exceptions

        from airflow_provider_zuora_aqua.client.session import ExchangeDeadline

        seconds = self._exchange_seconds(deadline)
        with ExchangeDeadline(seconds) as bound:
            try:
                response = self._session.request(
                    method,
                    f"{self.settings.base_url}{path}",
                    headers=headers,
                    json=json,
                    data=data,
                    timeout=(min(_CONNECT_TIMEOUT, seconds), seconds),
                    allow_redirects=False,
                    stream=True,
                )
                with response:
                    reader = AnswerReader(
                        response.status_code, response.headers, what=f"{method} {path}", deadline=bound.deadline
                    )
                    for chunk in response.raw.stream(READ_CHUNK_BYTES, decode_content=False):
                        reader.feed(chunk)
                    body = reader.finish()
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                why = (
                    f"timed out waiting for the answer (none complete within {seconds:g} s)"
                    if bound.fired
                    else _describe_transport_error(exc)
                )
                raise AquaTransportError(
                    f"{method} {path} to {self.settings.base_url} failed: {why}",
                    request_sent=_request_may_have_arrived(exc),
                ) from None
        return HttpAnswer(response.status_code, response.headers, body)

    def _exchange_seconds(self, deadline: float | None) -> float:
        """Wall-clock bound of one exchange: the connection's ``timeout``, within ``deadline``."""
        if deadline is None:
            return self.settings.timeout
        return max(0.1, min(self.settings.timeout, deadline - time.monotonic()))

    # Result files

    def download_file(
        self,
        file_id: str,
        destination: str | os.PathLike[str] | ObjectStoragePath,
        *,
        track_id: str | None = None,
        expected_records: int | None = None,
    ) -> dict[str, Any]:
        """
        Stream a result file (``GET /v1/files/{fileId}``) to ``destination``, verified, in constant memory.

        The file appears under its final name only complete and verified: locally through a
        temporary name in the same folder, in object storage by an upload from a local spool
        file, which is always removed. A connection dropped mid-file is retried within the retry
        policy, resuming with ``Range`` when the server answers ``206``.

        :param destination: a local file path, a URI (``file:///...``, ``s3://bucket/key``) or an
            ``airflow.sdk.ObjectStoragePath`` (its connection, if any, is used).
        :param expected_records: the batch's ``recordCount``; another count raises
            :class:`AquaIntegrityError` and nothing is published.
        :return: ``file_id``, ``uri``, ``format``, ``bytes``, ``records`` (CSV data records) and
            ``sha256`` (hex digest of the stored bytes).
        :raises AquaFileNotFoundError: purged (after 72 hours) or unknown file.
        :raises AquaFileTooLargeError: the file is over Zuora's 2,047 MB cap.
        :raises AquaFileAccessDeniedError: the user may not export data.
        """
        file_id = validate_file_id(file_id)
        with StagedFile(resolve_destination(destination)) as staged:
            result = self.fetch_file(file_id, staged, track_id=track_id, expected_records=expected_records)
            staged.publish()
        return result

    def fetch_file(
        self,
        file_id: str,
        staged: StagedFile,
        *,
        track_id: str | None = None,
        expected_records: int | None = None,
        file_format: str | None = None,
    ) -> dict[str, Any]:
        """
        :meth:`download_file` into a :class:`StagedFile` without publishing it, for callers that
        publish several files together (a batch's segments).

        :param file_format: the job's format (``csv``, ``gzip``, ``zip``): other bytes are refused.
        """
        file_id = validate_file_id(file_id)
        track_id = validate_track_id(track_id)
        receiver = FileReceiver(file_id, staged, file_format)
        retrying = tenacity.Retrying(**retry_policy(self.settings))
        self._scrubbed(lambda: retrying(self._receive_file, receiver, track_id))()
        self.log.info("Downloaded AQuA result file %s: %d bytes", file_id, receiver.received)
        return receiver.finish(expected_records)

    def _receive_file(self, receiver: FileReceiver, track_id: str | None) -> None:
        """One attempt: the whole file, or the rest of it after a dropped connection."""
        import requests

        path, offset = f"{FILES_PATH}/{receiver.file_id}", receiver.resume_offset
        response = self._open_file(path, track_id, offset)
        with response:
            self.last_request_id = response.headers.get(REQUEST_ID_HEADER)
            media_type = response.headers.get("Content-Type", "").lower()
            if response.status_code not in (200, 206, 416) or media_type.startswith("application/json"):
                # Raw and decoded alike bounded: a small gzip error body must not expand without limit.
                raw = response.raw.read(MAX_ERROR_BODY, decode_content=False) or b""
                body = decode_prefix(raw, response.headers.get("Content-Encoding"), MAX_ERROR_BODY)
                raise file_error(HttpAnswer(response.status_code, response.headers, body), receiver.file_id)
            receiver.begin(response.status_code, response.headers, offset)
            try:
                for chunk in response.iter_content(CHUNK_BYTES):
                    receiver.write(chunk)
            except requests.RequestException as exc:
                raise AquaTransportError(
                    f"GET {path} broke off after {receiver.received} bytes: {_describe_transport_error(exc)}",
                    request_sent=True,
                ) from None
            receiver.end()

    def _open_file(self, path: str, track_id: str | None, offset: int) -> requests.Response:
        """Open the answer stream, with the shared token; on a 401, replace the token once."""
        import requests

        def send(token: str) -> requests.Response:
            headers = download_headers(build_headers(self.settings, token, track_id), offset)
            timeout = self.settings.timeout  # per read: a stalled stream fails, a long one does not
            try:
                return self._session.get(
                    f"{self.settings.base_url}{path}",
                    headers=headers,
                    stream=True,
                    timeout=(min(_CONNECT_TIMEOUT, timeout), timeout),
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                raise AquaTransportError(
                    f"GET {path} to {self.settings.base_url} failed: {_describe_transport_error(exc)}",
                    request_sent=_request_may_have_arrived(exc),
                ) from None

        token = self._cached_token()
        response = send(token)
        if response.status_code != 401:
            return response
        response.close()
        self.log.info("Zuora answered 401 to GET %s: fetching a new OAuth token and retrying once", path)
        TOKEN_CACHE.invalidate(self.settings.token_cache_key, token)
        return send(self._cached_token())


def _deadline(max_seconds: float | None) -> float | None:
    """The ``time.monotonic()`` instant a call bounded to ``max_seconds`` must end by (None: no bound)."""
    return None if max_seconds is None else time.monotonic() + max_seconds


def _request_may_have_arrived(exc: Exception) -> bool:
    """False only when no connection was made, so Zuora cannot have seen the request."""
    import requests
    import urllib3.exceptions

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _describe_transport_error(exc: Exception) -> str:
    import requests
    import urllib3.exceptions

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timed out while connecting"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "timed out waiting for the answer"
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        # Drop urllib3's "<HTTPConnection object at 0x...>: " prefix.
        return f"could not connect: {str(reason).split(': ', 1)[-1]}"
    return f"{type(exc).__name__}: {reason or exc}"
