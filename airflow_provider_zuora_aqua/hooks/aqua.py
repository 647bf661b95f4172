"""Hook for Zuora AQuA (Aggregate Query API): the domain verbs.

The HTTP lives in :mod:`airflow_provider_zuora_aqua.client`: :class:`~.client.sync_client.AquaClient`
(sync) and :class:`~.client.async_client.AsyncAquaClient` (async) send, authenticate, bound, retry
and scrub every call; this hook says which calls make a verb and what their answers mean.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowNotFoundException
from asgiref.sync import sync_to_async

from airflow_provider_zuora_aqua.client.answers import CallRecord, HttpAnswer, parse_job_answer, short_text
from airflow_provider_zuora_aqua.client.async_client import AsyncTTLCache, shared_client_session
from airflow_provider_zuora_aqua.client.auth import secret_forms
from airflow_provider_zuora_aqua.client.builder import build_sync_client
from airflow_provider_zuora_aqua.client.request import (
    IDEMPOTENCY_KEY_HEADER,
    JOBS_PATH,
    SUBMIT_PATH,
    validate_idempotency_key,
    validate_job_id,
)
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings
from airflow_provider_zuora_aqua.compat import BaseHook, mask_secret
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaIdempotencyKeyReusedError,
    AquaJobAlreadyFinishedError,
    AquaRateLimitError,
    AquaServerError,
    AquaSubmitInProgressError,
)
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus
from airflow_provider_zuora_aqua.results.destination import resolve_destination
from airflow_provider_zuora_aqua.results.receiver import FileReceiver, validate_file_id
from airflow_provider_zuora_aqua.results.staging import StagedFile

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_zuora_aqua.client.async_client import AsyncAquaClient
    from airflow_provider_zuora_aqua.client.sync_client import AquaClient, Session

#: Seconds a connection test may wait for Zuora (the UI's Test action should answer fast).
_TEST_CONNECTION_TIMEOUT = 10.0
#: Connection settings looked up by triggers, per connection id.
_ASYNC_SETTINGS: AsyncTTLCache[AquaConnectionSettings] = AsyncTTLCache(ttl=60.0)


class ZuoraAquaHook(BaseHook):
    """
    Interact with Zuora AQuA: OAuth token, submit, read and cancel jobs, download result files.

    One OAuth token per connection is shared by all hooks and threads of the process and
    refreshed shortly before it expires; on a ``401`` the hook fetches a new token once and
    sends the call once more. Connection errors, ``429`` (honouring ``Retry-After``) and ``5xx``
    are retried with backoff, bounded by the connection's ``max_retries`` and
    ``retry_max_seconds`` extras (see :meth:`submit_job` for which submits are resent); other
    ``4xx`` answers are final.

    :param zuora_conn_id: The Airflow connection of type ``zuora_aqua``.
    :param settings: The connection's settings when the caller has them already (they are
        looked up on first use otherwise).
    """

    conn_name_attr = "zuora_conn_id"
    default_conn_name = "zuora_aqua_default"
    conn_type = "zuora_aqua"
    hook_name = "Zuora AQuA"

    def __init__(
        self, zuora_conn_id: str = default_conn_name, *, settings: AquaConnectionSettings | None = None
    ) -> None:
        super().__init__()
        self.zuora_conn_id = zuora_conn_id
        self._settings = settings
        self._record = CallRecord()
        #: The process id the client was built in, and the client (see :attr:`_client`).
        self._built_client: tuple[int, AquaClient] | None = None

    @property
    def settings(self) -> AquaConnectionSettings:
        """The validated connection; the client secret is registered with the secrets masker."""
        if self._settings is None:
            try:
                connection = self.get_connection(self.zuora_conn_id)
            except AirflowNotFoundException:
                raise _unknown_connection(self.zuora_conn_id) from None
            settings = AquaConnectionSettings.from_connection(connection)
            for form in secret_forms(settings.client_secret):  # also URL-encoded, as the token form sends it
                mask_secret(form)
            self._settings = settings
        return self._settings

    @property
    def last_request_id(self) -> str | None:
        """``Zuora-Request-Id`` of the last answer, for error reports (support asks for it)."""
        return self._record.request_id

    @property
    def last_attempts(self) -> int:
        """How many times the last call was sent (more than 1 after retries)."""
        return self._record.attempts

    def with_new_session(self) -> ZuoraAquaHook:
        """
        The same connection with its own HTTP session.

        For ``on_kill``: it runs in a signal handler that may have interrupted a request of this
        hook, and must neither reuse that session nor look the connection up. The settings are
        shared when this hook has them; otherwise the new hook looks them up when first used,
        which is in the thread that makes the call, not in the handler.
        """
        return type(self)(self.zuora_conn_id, settings=self._settings)

    @property
    def _client(self) -> AquaClient:
        """
        This hook's sync client in this process, built on first use (DAG files import the hook at
        every parse: ``requests`` would add hundreds of milliseconds to each).

        Not a ``functools.cached_property``: before Python 3.12 it holds one lock for every hook
        while the client is built, and a process forked meanwhile by another thread would wait on
        it forever. Two threads racing here build a client each and one is kept; a forked child
        builds its own rather than share the parent's connections.
        """
        built = self._built_client
        if built is None or built[0] != os.getpid():
            built = (os.getpid(), build_sync_client(self.settings, log=self.log, record=self._record))
            self._built_client = built
        return built[1]

    def zuora_now(self) -> datetime | None:
        """
        Zuora's time now, from the ``Date`` header of its answers to this process (the token
        request is sent first when there was none yet); None when no answer carried a usable one.
        """
        from airflow_provider_zuora_aqua.client import server_clock

        if server_clock.zuora_now(self.settings.base_url) is None:
            self.get_access_token()
        return server_clock.zuora_now(self.settings.base_url)

    def get_conn(self) -> Session:
        """Return the HTTP session the hook uses."""
        return self._client.session

    def get_access_token(self) -> str:
        """Return the shared OAuth token of this connection, fetching one when needed."""
        return self._client.access_token()

    def test_connection(self) -> tuple[bool, str]:
        """
        Fetch a new token, for the Test action of the connections UI and ``airflow connections test``.

        One attempt with a short timeout and no retries, so an unreachable host fails within
        seconds; the shared token cache is bypassed so that the test really reaches Zuora.
        """
        try:
            settings = self.settings
            probe = dataclasses.replace(
                settings, max_retries=0, timeout=min(settings.timeout, _TEST_CONNECTION_TIMEOUT)
            )
            build_sync_client(probe, log=self.log).fetch_token()
        except Exception as exc:
            return False, str(exc)
        return True, f"Connected to {self.settings.base_url}: Zuora issued an OAuth token."

    # Jobs

    def get_job(self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        """
        Return the job JSON (``GET /v1/batch-query/jobs/{jobid}``).

        :param max_seconds: bound on the whole call, retries included.
        :raises AquaJobNotFoundError: no job has this id.
        """
        job_id = validate_job_id(job_id)
        return self._request(
            "GET", f"{JOBS_PATH}/{job_id}", job_id=job_id, track_id=track_id, deadline=_deadline(max_seconds)
        )

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
        :class:`AquaIdempotencyKeyReusedError`. A refusal for the tenant's job limit or the rate
        limit (``429``, error ``90028``) raises :class:`AquaRateLimitError` at once, for the
        caller's slot wait: Zuora keeps a ``90028`` answer under the key for 24 hours (only a
        new key gets the job made), while a ``429`` comes before Zuora looks at the key.

        Without a key a submit is not idempotent: it is sent again only when the request cannot
        have reached Zuora (no connection made, ``429``, ``503``). After a read timeout or a
        dropped connection the job may exist, so the :class:`AquaTransportError` is raised.

        :param max_seconds: bound on the whole call, retries included.
        """
        deadline = _deadline(max_seconds)
        with _naming_the_query(body):
            if idempotency_key is None:
                return self._request(
                    "POST", SUBMIT_PATH, json=body, track_id=track_id, idempotent=False, deadline=deadline
                )
            return self._submit_keyed(body, idempotency_key, track_id=track_id, deadline=deadline)

    def _submit_keyed(
        self, body: dict[str, Any], idempotency_key: str, *, track_id: str | None, deadline: float | None
    ) -> dict[str, Any]:
        headers = {IDEMPOTENCY_KEY_HEADER: validate_idempotency_key(idempotency_key)}
        try:
            return self._request(
                "POST",
                SUBMIT_PATH,
                json=body,
                track_id=track_id,
                headers=headers,
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
        path = f"{JOBS_PATH}/{job_id}"
        async with self._aclient() as client:
            return await client.call("GET", path, read=_job_reader("GET", path, job_id), track_id=track_id)

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
        headers: dict[str, str] | None = None,
        keyed_submit: bool = False,
    ) -> dict[str, Any]:
        """
        One call that answers a job, through the sync client.

        :param keyed_submit: a submit with an ``Idempotency-Key``: a ``409`` means its first
            request is still in progress, so it is waited out and sent again; a rate-limit
            refusal is raised at once (Zuora would replay it for the same key).
        """
        read = _job_reader(method, path, job_id, keyed_submit=keyed_submit)
        return self._client.call(
            method,
            path,
            read=read,
            track_id=track_id,
            json=json,
            headers=headers,
            idempotent=idempotent,
            keyed_submit=keyed_submit,
            deadline=deadline,
        )

    @asynccontextmanager
    async def _aclient(self) -> AsyncIterator[AsyncAquaClient]:
        """The async client, on the event loop's shared session."""
        from airflow_provider_zuora_aqua.client.async_client import AsyncAquaClient

        settings = await self._asettings()
        async with shared_client_session() as session:
            yield AsyncAquaClient(settings, session, log=self.log, record=self._record)

    async def _asettings(self) -> AquaConnectionSettings:
        """
        :attr:`settings`, looked up without blocking (``aget_connection`` masks the secret).

        Shared by the triggers of a process for a minute: hundreds of triggers of one
        connection make one lookup, and an edited connection applies within a minute.
        """
        if self._settings is None:
            self._settings = await _ASYNC_SETTINGS.get(self.zuora_conn_id, self._aload_settings)
        return self._settings

    async def _aload_settings(self) -> AquaConnectionSettings:
        try:
            connection = await self.aget_connection(self.zuora_conn_id)
        except AirflowNotFoundException:
            raise _unknown_connection(self.zuora_conn_id) from None
        # Reading the extras masks them with a sync supervisor call, which Airflow 3.0 refuses on
        # the event loop: read them in a worker thread.
        return await sync_to_async(AquaConnectionSettings.from_connection)(connection)

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
        receiver = FileReceiver(file_id, staged, file_format, records_known=expected_records is not None)
        self._client.download(file_id, receiver, track_id=track_id)
        self.log.info("Downloaded AQuA result file %s: %d bytes", file_id, receiver.received)
        return receiver.finish(expected_records)


def _unknown_connection(conn_id: str) -> AquaConfigurationError:
    default = ZuoraAquaHook.default_conn_name
    return AquaConfigurationError(
        f"Airflow has no connection {conn_id!r}. Create it (type 'Zuora AQuA') in the UI under Admin > Connections, "
        f"with `airflow connections add {conn_id} --conn-type zuora_aqua ...`, or as the environment variable "
        f"AIRFLOW_CONN_{conn_id.upper()}; without zuora_conn_id the provider uses {default!r} "
        f"(AIRFLOW_CONN_{default.upper()})."
    )


_QUERY_NUMBER = re.compile(r"\bQuery (?P<number>[0-9]{1,3})\b")


@contextmanager
def _naming_the_query(body: dict[str, Any]) -> Iterator[None]:
    """
    A refused submit whose message says ``Query N`` (Zuora counts queries from 1) names that
    query's batch and quotes its ZOQL instead: which of 50 queries is "Query 7" is not obvious.
    """
    try:
        yield
    except AquaApiError as exc:
        found = _QUERY_NUMBER.search(exc.message)
        queries = body.get("queries") if isinstance(body, dict) else None
        number = int(found["number"]) if found else 0
        if isinstance(queries, list) and 1 <= number <= len(queries) and isinstance(queries[number - 1], dict):
            query = queries[number - 1]
            exc.message = (
                f"Zuora refused the query of batch {query.get('name')!r} (query {number} of {len(queries)}: "
                f"{short_text(query.get('query'), 300)!r}): {exc.message}"
            )
            exc.args = (exc._describe(),)
        raise


def _deadline(max_seconds: float | None) -> float | None:
    """The ``time.monotonic()`` instant a call bounded to ``max_seconds`` must end by (None: no bound)."""
    return None if max_seconds is None else time.monotonic() + max_seconds


def _job_reader(
    method: str, path: str, job_id: str | None, *, keyed_submit: bool = False
) -> Callable[[HttpAnswer], dict[str, Any]]:
    """What a call that answers a job makes of its answer: the job JSON, or the matching error."""

    def read(answer: HttpAnswer) -> dict[str, Any]:
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

    return read


def hook_of(owner: Any, hook_class: Callable[..., ZuoraAquaHook]) -> ZuoraAquaHook:
    """
    The hook of an operator or sensor's ``zuora_conn_id``, made once per connection id and kept
    on the owner. Not a ``cached_property``: on Python < 3.12 that holds a class-wide lock while
    it builds, which a fork (a worker's task process) can inherit held.

    :param hook_class: the owner module's ``ZuoraAquaHook``, so that a test can patch it there.
    """
    hook = owner.__dict__.get("_hook")
    if hook is None or hook.zuora_conn_id != owner.zuora_conn_id:
        hook = owner.__dict__["_hook"] = hook_class(zuora_conn_id=owner.zuora_conn_id)
    return hook
