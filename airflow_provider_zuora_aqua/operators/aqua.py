"""Operators for Zuora AQuA jobs."""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.compat import BaseOperator, conf
from airflow_provider_zuora_aqua.exceptions import (
    AquaConfigurationError,
    AquaError,
    AquaIdempotencyKeyReusedError,
    AquaJobAlreadyFinishedError,
    AquaJobError,
    AquaJobFailedError,
    AquaJobNotFoundError,
    AquaJobTimeoutError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.incremental.export import IncrementalExport
from airflow_provider_zuora_aqua.incremental.ledger import validate_query_name
from airflow_provider_zuora_aqua.incremental.query import validate_cursor, window_query
from airflow_provider_zuora_aqua.incremental.windows import ONE_SECOND, Window, duration, whole_second
from airflow_provider_zuora_aqua.jobs.event import POLL_FAILED, TIMEOUT, AquaJobEvent
from airflow_provider_zuora_aqua.jobs.request import FORMATS, build_job_request, submit_refused
from airflow_provider_zuora_aqua.jobs.slots import submit_until_accepted
from airflow_provider_zuora_aqua.jobs.status import (
    AquaJobStatus,
    JobWatch,
    batches_of,
    check_job_succeeded,
    job_failure_reason,
    validate_interval,
)
from airflow_provider_zuora_aqua.results.delivery import Manifest, download_job_results
from airflow_provider_zuora_aqua.results.destination import resolve_destination
from airflow_provider_zuora_aqua.results.lineage import export_lineage, outlet_extra, record_outlet_extras
from airflow_provider_zuora_aqua.tasks.record import TaskJobRecord, TaskJobSet, task_idempotency_key, task_track_id

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

#: Total time ``on_kill`` may spend cancelling: Airflow sends SIGKILL a few seconds after SIGTERM.
ON_KILL_CANCEL_SECONDS = 3.0
#: The incremental export's defaults: Zuora's export index is eventually consistent (Estuary
#: keeps 5 minutes; Zuora's own stateful offset example is 600 s); monthly windows keep a
#: catch-up's jobs few (Guardian moved to monthly chunks); 4 of the tenant's 50 jobs at once.
DEFAULT_LAG = timedelta(minutes=10)
DEFAULT_MAX_WINDOW = timedelta(days=30)
DEFAULT_MAX_ACTIVE_JOBS = 4
#: Why a stateful (version 1.1) batch comes back ``full: true``: the submit operator's warning.
STATEFUL_FULL_LOAD_REASONS = (
    "Zuora reloads everything when the partner/project session is new (its first job), was idle "
    "for more than 180 days, or its query or deleted column changed since the last session; "
    "unless one of these was meant, downstream consumers get every record again"
)


class Phase(enum.Enum):
    """The phases of :class:`AquaSubmitJobOperator`, in order; ``on_kill`` cancels in the first three."""

    #: Looking for an earlier try's job (recorded id, or a recorded submit sent again).
    REATTACH = "re-attach"
    #: Sending this try's keyed submit.
    SUBMIT = "submit"
    #: The job runs: polled here or in the triggerer.
    WAIT = "wait"
    #: The job ended: its result is checked and, with a destination, its files downloaded.
    DELIVER = "deliver"
    #: The job's end is handled: its record is dropped.
    FORGET = "forget"


class _DeliveringOperator(BaseOperator):
    """What both operators that deliver a job's result share: the hook, and the lineage of what they delivered."""

    zuora_conn_id: str
    #: Each job delivered and the manifest of its files (None: none downloaded).
    _deliveries: Sequence[tuple[Mapping[str, Any], Manifest | None]] = ()

    @cached_property
    def hook(self) -> ZuoraAquaHook:
        return ZuoraAquaHook(zuora_conn_id=self.zuora_conn_id)

    def _delivered(self, context: Context, job: Mapping[str, Any], manifest: Manifest | None) -> None:
        """Keep the delivery for lineage, and put its files on the asset event of each outlet."""
        self._deliveries = [(job, manifest)]
        if manifest is not None:
            record_outlet_extras(context, self.outlets, outlet_extra(manifest.job_id, manifest.files))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs: the Zuora objects the jobs' queries read; outputs: the files written, if any."""
        return export_lineage(self.hook.settings.base_url, self._deliveries)


class AquaCancelJobOperator(BaseOperator):
    """
    Cancel a Zuora AQuA job by id (``DELETE /v1/batch-query/jobs/{jobid}``).

    Returns the job JSON (XCom ``return_value``). A job that had already finished is logged as a
    warning and the task succeeds with that job's JSON, unless ``fail_if_finished`` is set.

    .. seealso::
        For more information on how to use this operator, take a look at the README.

    :param job_id: The AQuA job id, usually pulled from the XCom of the task that submitted it.
        (templated)
    :param zuora_conn_id: The Airflow connection of type ``zuora_aqua``. (templated)
    :param fail_if_finished: Fail with :class:`AquaJobAlreadyFinishedError` when the job had
        already finished instead of succeeding with a warning.
    :param track_id: ``Zuora-Track-Id`` sent with each call; by default one derived from the
        dag id, task id, run id and try number. (templated)
    """

    template_fields: Sequence[str] = ("job_id", "zuora_conn_id", "track_id")

    def __init__(
        self,
        *,
        job_id: str,
        zuora_conn_id: str = ZuoraAquaHook.default_conn_name,
        fail_if_finished: bool = False,
        track_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.zuora_conn_id = zuora_conn_id
        self.fail_if_finished = fail_if_finished
        self.track_id = track_id

    @cached_property
    def hook(self) -> ZuoraAquaHook:
        return ZuoraAquaHook(zuora_conn_id=self.zuora_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        track_id = self.track_id or task_track_id(context["ti"])
        try:
            return self.hook.cancel_job(self.job_id, track_id=track_id)
        except AquaJobAlreadyFinishedError as exc:
            if self.fail_if_finished:
                raise
            self.log.warning("%s; the task succeeds because fail_if_finished is False", exc)
            return exc.job


class AquaSubmitJobOperator(_DeliveringOperator):
    """
    Submit a Zuora AQuA job, wait for it, and never leave it running when the task stops.

    It runs in phases, in order: *re-attach* (to an earlier try's job), *submit*, *wait* (here,
    or in the triggerer), *deliver* (the job JSON, or its files) and *forget* (the record).

    The job id goes to XCom (key ``aqua_job_id``) as soon as Zuora returns it, with the rendered
    connection id (``aqua_conn_id``) and, before it is sent, the submit (``aqua_submit``); on
    Airflow 3.3+ the same record goes to the task state store
    (:class:`~airflow_provider_zuora_aqua.tasks.record.TaskJobRecord`). The task returns the
    final job JSON (XCom ``return_value``); download the files with the batches' ``fileId``.

    When the task stops, the job stops with it:

    * killed (SIGTERM: marked failed or success, cleared, ``execution_timeout``): ``on_kill``
      sends one short cancel;
    * ``timeout`` reached, or waiting fails for good (job gone, credentials refused): the job
      is cancelled, then the task fails. Transient failures (connection, ``429``, ``5xx``) that
      outlast the hook's retries do not end the wait: an outage must not cancel healthy jobs;
    * the task process died (SIGKILL, OOM, lost worker): the failure callback
      :func:`~airflow_provider_zuora_aqua.callbacks.cancel_aqua_job_on_failure`, installed by
      default next to any ``on_failure_callback`` you set, cancels the job.

    Exactly one job per try: every submit carries an ``Idempotency-Key`` derived from the task
    try (:func:`~airflow_provider_zuora_aqua.tasks.record.task_idempotency_key`), so a submit
    whose answer was lost is sent again and Zuora answers with the job it already created.

    A retry re-attaches (Airflow 3.3+, ``durable=True``): when the previous try's job still
    runs, the task waits for it instead of submitting a duplicate; when it completed, the task
    returns it (or downloads its files) without submitting again (a stateful job moves its
    watermark once); when it failed or was cancelled, a new job is submitted. A previous try
    that died after sending its submit but before recording the job id left its key in the
    task state store: the retry sends that submit again, and Zuora names the job.

    With a ``destination``, the files of the completed job are downloaded there, verified, with
    a ``_manifest.json``, and the task returns the manifest instead of the job JSON. The job id
    stays recorded until the download succeeded: a retry after a failed download downloads
    again and never submits again.

    :param queries: A mapping of query name to ZOQL, or a list of AQuA query dicts (``name``,
        ``query``, ``type``, ``apiVersion``, ``deleted``, ...). 1 to 50 queries. (templated)
    :param job_name: The AQuA job name, at most 32 characters. (templated)
    :param format: ``csv``, ``zip`` or ``gzip``.
    :param version: ``1.0`` (stateless, the default) or ``1.1`` (stateful, needs ``partner`` and
        ``project``).
    :param partner: Stateful partner id. (templated)
    :param project: Stateful project id. (templated)
    :param use_query_labels: Use query labels as CSV headers.
    :param date_time_utc: Return date-times in UTC.
    :param job_options: Other submit fields as AQuA names them (``nullReplacement``,
        ``offset``, ``incrementalTime``, ``notifyUrl``, ...). (templated)
    :param wait_for_completion: Wait for the job to finish; if False, return right after submit.
    :param poll_interval: Longest wait between two status reads, in seconds. Polls back off
        from 2 s up to this; AQuA quotas favour 30 to 60 s.
    :param timeout: Seconds to wait for the job before cancelling it and failing the task; also
        the longest wait for a free job slot when the tenant runs its 50 concurrent jobs (each
        attempt refused for the limit is sent again with a new key; None: wait on).
    :param cancel_on_kill: Cancel the job from ``on_kill``.
    :param cancel_on_task_failure: Install :func:`cancel_aqua_job_on_failure` as an extra
        ``on_failure_callback``.
    :param zuora_conn_id: The Airflow connection of type ``zuora_aqua``. (templated)
    :param track_id: ``Zuora-Track-Id`` of every call; by default derived from the task try.
        (templated)
    :param destination: A folder (local path, ``file://`` or object storage URI such as
        ``s3://bucket/prefix``, or an ``ObjectStoragePath``) to download the result files into.
        None (the default) returns the job JSON without downloading. (templated)
    :param destination_conn_id: The connection of the object storage ``destination``. (templated)
    :param durable: Re-attach a retry to the previous try's job through the task state store
        (Airflow 3.3+), as BigQuery's and Databricks' operators do. False: every try submits a
        fresh job.
    :param deferrable: Wait in the triggerer (:class:`AquaJobTrigger`) instead of a worker slot.
        Default: ``[operators] default_deferrable``. Stopping the deferred task (marked failed
        or success, cleared) cancels the job on Airflow 3.3+, and ``timeout`` cancels it too.
    """

    template_fields: Sequence[str] = (
        "queries",
        "job_name",
        "partner",
        "project",
        "job_options",
        "zuora_conn_id",
        "track_id",
        "destination",
        "destination_conn_id",
    )
    template_fields_renderers = {"queries": "json", "job_options": "json"}
    ui_color = "#00b3a4"

    def __init__(
        self,
        *,
        queries: Sequence[Mapping[str, Any]] | Mapping[str, str],
        job_name: str | None = None,
        format: str = "csv",
        version: str = "1.0",
        partner: str | None = None,
        project: str | None = None,
        use_query_labels: bool | None = None,
        date_time_utc: bool | None = None,
        job_options: Mapping[str, Any] | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 30.0,
        timeout: float | None = None,
        cancel_on_kill: bool = True,
        cancel_on_task_failure: bool = True,
        zuora_conn_id: str = ZuoraAquaHook.default_conn_name,
        track_id: str | None = None,
        destination: str | ObjectStoragePath | None = None,
        destination_conn_id: str | None = None,
        durable: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.queries = queries
        self.job_name = job_name
        self.format = format
        self.version = version
        self.partner = partner
        self.project = project
        self.use_query_labels = use_query_labels
        self.date_time_utc = date_time_utc
        self.job_options = job_options
        self.wait_for_completion = wait_for_completion
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.cancel_on_kill = cancel_on_kill
        self.zuora_conn_id = zuora_conn_id
        self.track_id = track_id
        if destination is not None and not wait_for_completion:
            raise AquaConfigurationError(
                "destination needs wait_for_completion=True: the files exist only once the job completed "
                "(or download them later with AquaDownloadResultsOperator)"
            )
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.durable = durable
        self.deferrable = deferrable
        if cancel_on_task_failure:
            self.on_failure_callback = _add_callback(self.on_failure_callback, cancel_aqua_job_on_failure)
        self.job_id: str | None = None
        self._phase = Phase.REATTACH
        self._track_id: str | None = None

    @cached_property
    def _stopped(self) -> threading.Event:
        """Set by ``on_kill``; made on first use, as Airflow 3.0 deep-copies operators and a lock cannot be."""
        return threading.Event()

    def execute(self, context: Context) -> dict[str, Any]:
        body = self._job_request()
        ti = context["ti"]
        self._track_id = self.track_id or task_track_id(ti)
        record = self._open_record(context)
        job = self._reattach(record) or self._submit(record, body, ti)
        job_id = self._hold(job, record)
        if not self.wait_for_completion:
            return job
        if self.deferrable:
            self._defer(context, job_id)
        job, request_id = self._wait(record, lambda: self._poll_until_finished(job_id))
        result = self._deliver(job, request_id, context)
        self._forget(record)
        return result

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: the job's result, a clear failure, or cancel on timeout."""
        checked = AquaJobEvent.from_payload(event)
        self._track_id = self.track_id or task_track_id(context["ti"])
        record = self._open_record(context)
        self._use_connection(record.conn_id)
        self.job_id, self._phase = checked.job_id, Phase.WAIT
        job, request_id = self._wait(record, lambda: self._outcome_of(checked))
        result = self._deliver(job, request_id, context)
        self._forget(record)
        return result

    def on_kill(self) -> None:
        """
        Cancel the job, in a few seconds at most, and never raise.

        It runs in a signal handler that may have interrupted this task's own calls (HTTP, or
        the task runner's channel to its supervisor, which takes a non-reentrant lock). So the
        cancel runs in a thread that the handler waits for only ``ON_KILL_CANCEL_SECONDS``:
        a cancel stuck behind such a lock cannot hang the handler until SIGKILL.
        """
        self._stopped.set()
        try:
            if not self._job_may_run:
                self.log.info("on_kill: no running AQuA job to cancel")
                return
            if not self.cancel_on_kill:
                self.log.info("on_kill: cancel_on_kill is False, AQuA job %s keeps running", self.job_id)
                return
            canceller = threading.Thread(
                target=self._cancel,
                args=("the task was killed",),
                kwargs={"hook": self.hook.with_new_session(), "max_seconds": ON_KILL_CANCEL_SECONDS},
                name="aqua-on-kill-cancel",
                daemon=True,
            )
            canceller.start()
            canceller.join(ON_KILL_CANCEL_SECONDS + 0.5)
            if canceller.is_alive():
                self.log.warning("on_kill: the cancel of AQuA job %s did not finish in time", self.job_id)
        except Exception as exc:
            self.log.error("on_kill: could not cancel AQuA job %s: %s", self.job_id, exc)

    # -- the phases, in order ---------------------------------------------------------------

    def _reattach(self, record: TaskJobRecord) -> dict[str, Any] | None:
        """
        Re-attach phase: the job of an earlier try to go on with (running, or completed), found
        through the connection it was submitted with; None to submit a new one.
        """
        self._phase = Phase.REATTACH
        rendered = self.zuora_conn_id
        self._use_connection(record.conn_id)
        previous_id = record.job_id or self._resend_recorded_submit(record)
        job = self._previous_job(previous_id) if previous_id else None
        if job is None:
            self._use_connection(rendered)
        return job

    def _submit(self, record: TaskJobRecord, body: dict[str, Any], ti: Any) -> dict[str, Any]:
        """Submit phase: one keyed submit, recorded before it is sent; a full tenant is waited out (``timeout``)."""
        self._phase = Phase.SUBMIT

        def submit_once() -> dict[str, Any]:
            key = task_idempotency_key(ti)
            # Recorded before sending: whatever kills the task from here on, the key names its job.
            record.submitting(key, body, self.zuora_conn_id)
            try:
                job = self.hook.submit_job(body, track_id=self._track_id, idempotency_key=key)
            except AquaError as exc:
                if submit_refused(exc):
                    record.answered()  # no job: nothing for a retry or the failure callback to send again
                raise
            self.log.info(
                "Submitted AQuA job %s (Idempotency-Key %s, Zuora-Request-Id %s)",
                job["id"],
                key,
                self.hook.last_request_id,
            )
            return job

        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        return submit_until_accepted(submit_once, deadline=deadline, stopped=self._stopped, log=self.log)

    def _hold(self, job: dict[str, Any], record: TaskJobRecord) -> str:
        """The task holds its job from here on: its id is recorded, and a kill before now cancels it."""
        job_id = self.job_id = str(job["id"])
        record.submitted(job_id)
        self._phase = Phase.WAIT
        if self._stopped.is_set():
            # SIGTERM came while the submit was in flight, when on_kill had no job id to cancel.
            self._cancel("the task was killed while submitting it")
            raise AquaError(f"AQuA job {job_id} was cancelled: the task was killed while submitting it")
        return job_id

    def _defer(self, context: Context, job_id: str) -> None:
        """Wait phase in the triggerer: the task resumes in :meth:`execute_complete`."""
        # Imported only when deferring: DAG files import this module at every parse.
        from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger

        self.defer(
            trigger=AquaJobTrigger(
                job_id=job_id,
                zuora_conn_id=self.zuora_conn_id,
                poll_interval=self.poll_interval,
                end_time=self._deferral_deadline(context),
                track_id=self._track_id,
                cancel_on_kill=self.cancel_on_kill,
            ),
            # No defer timeout: the trigger enforces ``timeout`` itself, so that the job is
            # cancelled (a deferral timeout would fail the task without touching the job).
            method_name="execute_complete",
        )

    def _wait(
        self, record: TaskJobRecord, until_finished: Callable[[], tuple[dict[str, Any], str | None]]
    ) -> tuple[dict[str, Any], str | None]:
        """
        Wait phase: the job that completed and the request id that saw it. Whatever else ends the
        wait (the job failed, an error, a timeout, the task being stopped), the job is ended and
        forgotten, or, when it cannot be cancelled, left recorded for the next try.
        """
        try:
            job, request_id = until_finished()
            self._phase = Phase.DELIVER
            check_job_succeeded(job, request_id)
            return job, request_id
        except BaseException as exc:
            if self._phase is Phase.WAIT:
                self._cancel(f"waiting stopped ({type(exc).__name__})")
            if self._phase is not Phase.WAIT:
                self._forget(record)
            raise

    def _deliver(self, job: dict[str, Any], request_id: str | None, context: Context) -> dict[str, Any]:
        """
        Deliver phase: the job JSON, or with a ``destination`` the manifest of its verified files.
        Until they landed the job stays recorded: a retry downloads again, never submits again.
        """
        for batch in batches_of(job):
            self.log.info(
                "AQuA job %s batch %r completed: %s records, file %s",
                job.get("id"),
                batch.get("name"),
                batch.get("recordCount"),
                batch.get("fileId") or batch.get("segments"),
            )
            if str(job.get("version") or self.version) == "1.1" and batch.get("full") is True:
                self.log.warning(
                    "AQuA job %s batch %r is a full load (full: true), not an increment: %s",
                    job.get("id"),
                    batch.get("name"),
                    STATEFUL_FULL_LOAD_REASONS,
                )
        if self.destination is None:
            self._delivered(context, job, None)
            return job
        manifest = download_job_results(
            self.hook.fetch_file,
            job,
            self.destination,
            destination_conn_id=self.destination_conn_id,
            track_id=self._track_id,
        )
        self._delivered(context, job, manifest)
        return manifest.to_json()

    def _forget(self, record: TaskJobRecord) -> None:
        """Forget phase: the job's end is handled, so a later clear of the task submits anew."""
        self._phase = Phase.FORGET
        record.forget()

    # -- what the phases use ----------------------------------------------------------------

    def _job_request(self) -> dict[str, Any]:
        """The submit body, checked before anything is sent."""
        return build_job_request(
            queries=self.queries,
            job_name=self.job_name,
            format=self.format,
            version=self.version,
            partner=self.partner,
            project=self.project,
            use_query_labels=self.use_query_labels,
            date_time_utc=self.date_time_utc,
            job_options=self.job_options,
        )

    def _open_record(self, context: Context) -> TaskJobRecord:
        store = context.get("task_state_store") if self.durable else None
        return TaskJobRecord.open(context["ti"], store, self.zuora_conn_id)

    def _use_connection(self, conn_id: str | None) -> None:
        """Talk to Zuora through ``conn_id`` from now on: a recorded job lives where it was submitted."""
        if conn_id is None or conn_id == self.zuora_conn_id:
            return
        self.log.info("Using connection %s, the one the recorded AQuA job was submitted with", conn_id)
        self.zuora_conn_id = conn_id
        self.__dict__.pop("hook", None)

    def _previous_job(self, previous_id: str) -> dict[str, Any] | None:
        """The earlier try's job if it runs or completed; None if it ended otherwise or is gone."""
        try:
            job = self.hook.get_job(previous_id, track_id=self._track_id)
        except AquaJobNotFoundError:
            self.log.warning("AQuA job %s of an earlier try no longer exists: submitting a new job", previous_id)
            return None
        status = job.get("status")
        if not AquaJobStatus.is_terminal(status):
            self.log.info(
                "Re-attaching to AQuA job %s of an earlier try (%s) instead of submitting", previous_id, status
            )
            return job
        if job_failure_reason(job) is None:
            self.log.info("AQuA job %s of an earlier try completed: using it without submitting again", previous_id)
            return job
        self.log.info("AQuA job %s of an earlier try ended %s: submitting a new job", previous_id, status)
        return None

    def _resend_recorded_submit(self, record: TaskJobRecord) -> str | None:
        """
        An earlier try sent (or was about to send) a submit, then died before recording the job
        id: send that submit again, with its key and body, and Zuora names the job it created.
        A key Zuora no longer knows (24 hours) creates the job now; a refused one gives None.
        """
        if record.submit_key is None or record.submit_body is None:
            return None
        try:
            job = self.hook.submit_job(record.submit_body, track_id=self._track_id, idempotency_key=record.submit_key)
        except AquaIdempotencyKeyReusedError as exc:
            self.log.warning("The submit of an earlier try cannot be sent again (%s): submitting a new job", exc)
            return None
        self.log.info(
            "The submit of an earlier try (Idempotency-Key %s) names AQuA job %s", record.submit_key, job["id"]
        )
        record.submitted(job["id"])
        return str(job["id"])

    def _poll_until_finished(self, job_id: str) -> tuple[dict[str, Any], str | None]:
        """Poll with backoff until the job finishes; on ``timeout`` cancel it and fail."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        watch = JobWatch(
            job_id, poll_interval=self.poll_interval, deadline=deadline, clock=time.monotonic, log=self.log
        )
        while True:
            try:
                watch.saw(self.hook.get_job(job_id, track_id=self._track_id))
            except AquaError as exc:
                if not watch.tolerate(exc):
                    raise
            if watch.finished:
                return watch.job, self.hook.last_request_id
            if watch.timed_out:
                raise self._cancel_after_timeout(watch.job, self.hook.last_request_id)
            if self._stopped.wait(watch.next_wait()):
                raise AquaError(f"Stopped waiting for AQuA job {job_id}: the task was killed")

    def _outcome_of(self, event: AquaJobEvent) -> tuple[dict[str, Any], str | None]:
        """What the trigger saw: the finished job, or (timeout, status unreadable) cancel and fail."""
        if event.status == TIMEOUT:
            raise self._cancel_after_timeout(event.job or {"id": event.job_id}, event.request_id)
        if event.status == POLL_FAILED:
            self._cancel("its status could not be read")
            raise event.error_to_raise()
        return event.job or {"id": event.job_id}, event.request_id

    def _deferral_deadline(self, context: Context) -> float | None:
        """
        Epoch seconds at which the trigger gives up: ``timeout``, and also ``execution_timeout``,
        which Airflow 3 does not apply while a task is deferred.
        """
        deadlines = [] if self.timeout is None else [time.time() + self.timeout]
        started = getattr(context["ti"], "start_date", None)
        if self.execution_timeout is not None and started is not None:
            deadlines.append(started.timestamp() + self.execution_timeout.total_seconds())
        return min(deadlines, default=None)

    def _cancel_after_timeout(self, job: dict[str, Any], request_id: str | None) -> AquaJobTimeoutError:
        limits = [f"timeout of {self.timeout:g} s"] if self.timeout is not None else []
        if self.deferrable and self.execution_timeout is not None:
            limits.append(f"execution_timeout of {self.execution_timeout}")
        limit = " or ".join(limits)
        cancelled = self._cancel(f"the {limit} was reached")
        return AquaJobTimeoutError(
            f"AQuA job {self.job_id} did not finish within the {limit}; it was cancelled",
            job=cancelled or job,
            request_id=request_id,
        )

    @property
    def _job_may_run(self) -> bool:
        """A job is held and its end not seen yet: stopping the task must cancel it."""
        return self.job_id is not None and self._phase in (Phase.REATTACH, Phase.SUBMIT, Phase.WAIT)

    def _cancel(
        self, reason: str, *, hook: ZuoraAquaHook | None = None, max_seconds: float | None = None
    ) -> dict[str, Any] | None:
        """Cancel the job once; log what happened and never raise (the task is stopping anyway)."""
        job_id = self.job_id
        if job_id is None or not self._job_may_run:
            self.log.info("No running AQuA job to cancel (%s)", reason)
            return None
        try:
            job = (hook or self.hook).cancel_job_if_running(job_id, track_id=self._track_id, max_seconds=max_seconds)
        except Exception as exc:
            self.log.error("Could not cancel AQuA job %s after %s: %s", self.job_id, reason, exc)
            return None
        if AquaJobStatus.is_terminal(job.get("status")):
            self._phase = Phase.FORGET
        self.log.warning("Cancelled AQuA job %s because %s: it is now %s", self.job_id, reason, job.get("status"))
        return job


def _add_callback(existing: Any, callback: Any) -> list[Any]:
    """Append ``callback`` to an ``on_*_callback`` value (None, a callable or a list), once."""
    callbacks = list(existing) if isinstance(existing, (list, tuple)) else ([existing] if existing else [])
    if callback not in callbacks:
        callbacks.append(callback)
    return callbacks


class AquaDownloadResultsOperator(_DeliveringOperator):
    """
    Download every result file of a completed AQuA job into a folder, verified, with a manifest.

    Each completed batch's file (or each of its ``segments``) is streamed to ``destination``
    in constant memory, its CSV records are checked against the batch's ``recordCount``
    (segments: their sum), and only then does it appear under its final name. Names come from
    the batch names, made safe (see :mod:`airflow_provider_zuora_aqua.results.delivery`):
    ``accounts.csv``, ``accounts.csv.gz``, ``accounts.zip``, ``accounts.part1.csv.gz``.
    ``_manifest.json`` is written into the folder last and also returned (XCom
    ``return_value``)::

        {"job_id": ..., "destination": ...,
         "files": [{"batch", "file_id", "uri", "format", "bytes", "records", "sha256"}, ...]}

    When the task declares ``outlets``, each outlet's asset event carries the extra
    ``{"aqua_job_id", "files": [uris], "records": total}``. OpenLineage (with
    ``apache-airflow-providers-openlineage``) gets the Zuora objects read and the files written.

    :param job_id: The id of a completed AQuA job, usually pulled from the XCom of the task that
        submitted it (key ``aqua_job_id``). (templated)
    :param destination: The folder: a local path, a ``file://`` URI, an object storage URI such
        as ``s3://bucket/prefix/`` (needs its provider, e.g. ``apache-airflow-providers-amazon[s3fs]``),
        or an ``airflow.sdk.ObjectStoragePath``. (templated)
    :param destination_conn_id: The Airflow connection of the object store (e.g. of type
        ``aws``). (templated)
    :param zuora_conn_id: The Airflow connection of type ``zuora_aqua``. (templated)
    :param track_id: ``Zuora-Track-Id`` of every call; by default derived from the task try.
        (templated)
    """

    template_fields: Sequence[str] = ("job_id", "destination", "destination_conn_id", "zuora_conn_id", "track_id")
    ui_color = "#00b3a4"

    def __init__(
        self,
        *,
        job_id: str,
        destination: str | os.PathLike[str] | ObjectStoragePath,
        destination_conn_id: str | None = None,
        zuora_conn_id: str = ZuoraAquaHook.default_conn_name,
        track_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.zuora_conn_id = zuora_conn_id
        self.track_id = track_id

    def execute(self, context: Context) -> dict[str, Any]:
        track_id = self.track_id or task_track_id(context["ti"])
        # get_job refuses a missing id (a rendered "None": the upstream XCom is missing) before any request.
        job_id = self.job_id.strip() if isinstance(self.job_id, str) else self.job_id
        job = self.hook.get_job(job_id, track_id=track_id)
        status = job.get("status")
        if AquaJobStatus.normalize(status) != AquaJobStatus.COMPLETED:
            if AquaJobStatus.is_terminal(status):
                reason = job_failure_reason(job) or f"AQuA job {job.get('id')} ended {status!r}"
                raise AquaJobFailedError(f"{reason}: it has no results to download", job=job)
            raise AquaJobError(
                f"AQuA job {job.get('id')} is {status!r}, not 'completed': its results are not ready. "
                "Wait for the job first (AquaSubmitJobOperator waits by default, or use AquaJobSensor).",
                job=job,
            )
        manifest = download_job_results(
            self.hook.fetch_file, job, self.destination, destination_conn_id=self.destination_conn_id, track_id=track_id
        )
        self._delivered(context, job, manifest)
        return manifest.to_json()


class AquaIncrementalExportOperator(_DeliveringOperator):
    """
    Export what changed in Zuora since the last run, so that the union of all exports is the
    source: every record version exactly once, whatever fails between runs.

    Each query is exported in half-open windows ``[start, end)`` on its ``cursor`` (whole UTC
    seconds, rendered with an explicit offset), one AQuA job per window, into
    ``<destination>/<query>/<start>_<end>/`` with a ``_manifest.json`` written last (``query``,
    ``window`` ``{"cursor", "start", "end"}``, ``files``). The watermark is where the run of
    published windows from ``start`` ends: it is read from those manifests at every run and is
    never ahead of the data. A run exports from the watermark to ``now - lag`` (the first run
    from ``start``), in windows of at most ``max_window``, ``max_active_jobs`` AQuA jobs at a
    time, oldest first; a window whose file is over Zuora's 2,047 MB cap, or whose query ran past
    Zuora's 3-hour limit, is halved and its halves exported instead. The data interval of the
    run plays no part: see the incremental guide in the docs.

    Every job in flight is recorded before it is sent (XCom and task state store key
    ``aqua_jobs``): ``on_kill`` cancels them, the failure callback cancels them after a SIGKILL,
    and a retry re-attaches to the ones still running. A window published by a killed run is
    not exported again; a window a killed run left half-written is replaced.

    One task instance of the export runs at a time (``max_active_tis_per_dag=1`` unless set):
    two at once would plan from the same watermark. Give each export its own destination.

    Returns (XCom ``return_value``) the windows this run published:
    ``[{"query", "window", "manifest", "records", "job_id"}, ...]``, oldest first.

    :param queries: Query name → ZOQL ``select`` without a condition on ``cursor``; its own
        ``where`` is kept, in parentheses, and the window's bounds are added. The name is the
        query's folder under ``destination``. (templated)
    :param destination: Where the windows go: a local folder, a ``file://`` or object storage
        URI (``s3://bucket/prefix/``) or an ``ObjectStoragePath``. (templated)
    :param start: Where the first window starts when nothing was exported yet: a timezone-aware
        datetime or an ISO 8601 string with an offset (``2024-01-01T00:00:00Z``). (templated)
    :param destination_conn_id: The connection of the object storage ``destination``. (templated)
    :param cursor: The date-time field the windows are on. (templated)
    :param lag: How far behind now the newest window ends (a timedelta or seconds): Zuora's
        export index is eventually consistent, and a record can appear with an ``UpdatedDate``
        already in the past. Default 10 minutes.
    :param max_window: The longest window before it is cut (a timedelta or seconds). Default 30
        days.
    :param format: ``csv``, ``zip`` or ``gzip``.
    :param deleted: Export deleted records too (Zuora keeps them 30 days): True for an
        ``IsDeleted`` column (``Boolean``), or AQuA's ``deleted`` object (``column``, ``format``).
    :param max_active_jobs: AQuA jobs this task runs at once; they count against the tenant's
        50 concurrent stateless jobs. Default 4.
    :param poll_interval: Longest wait between two status reads of a job, in seconds.
    :param job_timeout: Seconds one job may run before it is cancelled and the task fails.
    :param zuora_conn_id: The Airflow connection of type ``zuora_aqua``. (templated)
    :param track_id: ``Zuora-Track-Id`` of every call; by default derived from the task try.
        (templated)
    :param durable: Re-attach a retry to the previous try's jobs through the task state store
        (Airflow 3.3+).
    :param cancel_on_task_failure: Install :func:`cancel_aqua_job_on_failure` as an extra
        ``on_failure_callback``.
    """

    template_fields: Sequence[str] = (
        "queries",
        "destination",
        "destination_conn_id",
        "start",
        "cursor",
        "zuora_conn_id",
        "track_id",
    )
    template_fields_renderers = {"queries": "json"}
    ui_color = "#00b3a4"

    def __init__(
        self,
        *,
        queries: Mapping[str, str],
        destination: str | ObjectStoragePath,
        start: datetime | str,
        destination_conn_id: str | None = None,
        cursor: str = "UpdatedDate",
        lag: timedelta | float = DEFAULT_LAG,
        max_window: timedelta | float = DEFAULT_MAX_WINDOW,
        format: str = "csv",
        deleted: bool | Mapping[str, Any] = False,
        max_active_jobs: int = DEFAULT_MAX_ACTIVE_JOBS,
        poll_interval: float = 30.0,
        job_timeout: float | None = None,
        zuora_conn_id: str = ZuoraAquaHook.default_conn_name,
        track_id: str | None = None,
        durable: bool = True,
        cancel_on_task_failure: bool = True,
        **kwargs: Any,
    ) -> None:
        # Two task instances of one export at once (a catch-up, a manual run during a scheduled
        # one) would plan from the same mark and publish overlapping windows: one at a time.
        kwargs.setdefault("max_active_tis_per_dag", 1)
        super().__init__(**kwargs)
        self.queries = queries
        self.destination = destination
        self.start = start
        self.destination_conn_id = destination_conn_id
        self.cursor = cursor
        self.lag = duration(lag, field="lag")
        self.max_window = duration(max_window, field="max_window", minimum=ONE_SECOND)
        self.format = str(format).lower()
        if self.format not in FORMATS:
            raise AquaConfigurationError(f"format {format!r} is not supported; use one of {', '.join(FORMATS)}")
        self.deleted = deleted_column(deleted)
        if isinstance(max_active_jobs, bool) or not isinstance(max_active_jobs, int) or not 1 <= max_active_jobs <= 50:
            raise AquaConfigurationError(
                f"max_active_jobs={max_active_jobs!r}: give 1 to 50 (the tenant runs 50 stateless jobs at once)"
            )
        self.max_active_jobs = max_active_jobs
        self.poll_interval = validate_interval("poll_interval", poll_interval)
        self.job_timeout = None if job_timeout is None else validate_interval("job_timeout", job_timeout)
        self.zuora_conn_id = zuora_conn_id
        self.track_id = track_id
        self.durable = durable
        if cancel_on_task_failure:
            self.on_failure_callback = _add_callback(self.on_failure_callback, cancel_aqua_job_on_failure)
        if not _templated(queries, cursor, start):
            self._export_arguments()  # refused when the DAG is built, not at the first run

    @cached_property
    def _stopped(self) -> threading.Event:
        """Set by ``on_kill``; made on first use, as Airflow 3.0 deep-copies operators and a lock cannot be."""
        return threading.Event()

    def execute(self, context: Context) -> list[dict[str, Any]]:
        queries, cursor, start = self._export_arguments()
        ti = context["ti"]
        store = context.get("task_state_store") if self.durable else None
        self._export = IncrementalExport(
            hook=self.hook,
            jobs=TaskJobSet.open(ti, store),
            destination=resolve_destination(self.destination, self.destination_conn_id),
            destination_conn_id=self.destination_conn_id,
            queries=queries,
            cursor=cursor,
            start=start,
            lag=self.lag,
            max_window=self.max_window,
            file_format=self.format,
            deleted=self.deleted,
            max_active_jobs=self.max_active_jobs,
            poll_interval=self.poll_interval,
            job_timeout=self.job_timeout,
            track_id=self.track_id or task_track_id(ti),
            new_key=lambda: task_idempotency_key(ti),
            stopped=self._stopped,
            log=self.log,
        )
        delivered = self._export.run()
        windows = [delivery.to_json(cursor) for delivery in delivered]
        self._deliveries = [(delivery.job, delivery.manifest) for delivery in delivered]
        record_outlet_extras(
            context,
            self.outlets,
            {"windows": windows, "records": sum(window["records"] for window in windows)},
        )
        return windows

    def on_kill(self) -> None:
        """Cancel every job in flight, in a few seconds at most; never raise (as :class:`AquaSubmitJobOperator`)."""
        self._stopped.set()
        export = getattr(self, "_export", None)
        if export is None or not export.in_flight:
            self.log.info("on_kill: no running AQuA job to cancel")
            return
        export.hook = self.hook.with_new_session()
        canceller = threading.Thread(
            target=export.cancel_in_flight,
            args=("the task was killed",),
            kwargs={"max_seconds": ON_KILL_CANCEL_SECONDS},
            name="aqua-on-kill-cancel",
            daemon=True,
        )
        canceller.start()
        canceller.join(ON_KILL_CANCEL_SECONDS + 0.5)

    def _export_arguments(self) -> tuple[dict[str, str], str, datetime]:
        """The rendered queries, cursor and start, checked (each query narrowed once to a sample window)."""
        cursor = validate_cursor(self.cursor)
        start = whole_second(self.start, field="start")
        if not isinstance(self.queries, Mapping) or not self.queries:
            raise AquaConfigurationError("queries must be a non-empty mapping of query name to ZOQL select")
        sample = Window(start, start + ONE_SECOND)
        queries = {}
        for name, query in self.queries.items():
            window_query(query, cursor, sample, name=validate_query_name(name))
            queries[name] = query
        return queries, cursor, start


def deleted_column(deleted: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    """AQuA's ``deleted`` object of each query: stateless exports need ``forceExport`` to get deleted rows."""
    if deleted is False or deleted is None:
        return None
    if deleted is True:
        return {"column": "IsDeleted", "format": "Boolean", "forceExport": True}
    if isinstance(deleted, Mapping) and isinstance(deleted.get("column"), str) and deleted["column"]:
        return {"format": "Boolean", "forceExport": True, **deleted}
    raise AquaConfigurationError(
        f"deleted={deleted!r}: give True, or AQuA's deleted object such as "
        "{'column': 'IsDeleted', 'format': 'Numeric'}"
    )


def _templated(*values: object) -> bool:
    """Whether any value still holds a Jinja template (checked once rendered)."""
    return any("{{" in str(value) for value in values)
