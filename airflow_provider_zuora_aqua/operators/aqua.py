"""Operators for Zuora AQuA jobs: thin adapters of Airflow's arguments and context to the job engine."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.compat import conf
from airflow_provider_zuora_aqua.engine.job_engine import ON_KILL_CANCEL_SECONDS, Finished, JobEngine
from airflow_provider_zuora_aqua.exceptions import (
    AquaConfigurationError,
    AquaJobAlreadyFinishedError,
    AquaJobFailedError,
    AquaJobNotFoundError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.incremental.export import ZUORA_LAG, IncrementalExport
from airflow_provider_zuora_aqua.incremental.lease import LeaseHolder
from airflow_provider_zuora_aqua.incremental.windows import duration, validate_max_window
from airflow_provider_zuora_aqua.jobs.event import AquaJobEvent
from airflow_provider_zuora_aqua.jobs.request import FORMATS, build_job_request, query_names
from airflow_provider_zuora_aqua.jobs.status import (
    check_deliverable,
    job_failure_reason,
    log_completed_batches,
    validate_interval,
)
from airflow_provider_zuora_aqua.operators.arguments import (
    add_callback,
    deferral_deadline,
    deferred_limit,
    deleted_column,
    export_arguments,
    job_timeout_argument,
    max_active_jobs_argument,
    templated,
)
from airflow_provider_zuora_aqua.operators.base import AquaBaseOperator, AquaJobOperator
from airflow_provider_zuora_aqua.results.delivery import download_job_results
from airflow_provider_zuora_aqua.results.destination import resolve_destination
from airflow_provider_zuora_aqua.results.lineage import record_window_events
from airflow_provider_zuora_aqua.tasks.job_records import ONE_JOB_SLOT, OneJobLedger, TaskJobRecord, TaskJobSet
from airflow_provider_zuora_aqua.tasks.try_ids import task_track_id

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

__all__ = [
    "ON_KILL_CANCEL_SECONDS",
    "AquaCancelJobOperator",
    "AquaDownloadResultsOperator",
    "AquaIncrementalExportOperator",
    "AquaSubmitJobOperator",
]

#: The incremental export's defaults: Zuora's own lag for a high-water mark (see
#: :data:`~airflow_provider_zuora_aqua.incremental.export.ZUORA_LAG`); monthly windows keep a
#: catch-up's jobs few (Guardian moved to monthly chunks); 4 of the tenant's 50 jobs at once.
DEFAULT_LAG = ZUORA_LAG
DEFAULT_MAX_WINDOW = timedelta(days=30)
DEFAULT_MAX_ACTIVE_JOBS = 4
#: How long an export waits for another writer of its destination and query to finish.
DEFAULT_DESTINATION_WAIT = timedelta(hours=1)


class AquaCancelJobOperator(AquaBaseOperator):
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

    def execute(self, context: Context) -> dict[str, Any]:
        track_id = self.track_id or task_track_id(context["ti"])
        try:
            return self.hook.cancel_job(self.job_id, track_id=track_id)
        except AquaJobAlreadyFinishedError as exc:
            if self.fail_if_finished:
                raise
            self.log.warning("%s; the task succeeds because fail_if_finished is False", exc)
            return exc.job


class AquaSubmitJobOperator(AquaJobOperator):
    """
    Submit a Zuora AQuA job, wait for it, and never leave it running when the task stops.

    The job's life (re-attach, submit, hold, wait, cancel) is the job engine's
    (:class:`~airflow_provider_zuora_aqua.engine.job_engine.JobEngine`); this operator adapts
    its arguments, the task's context and its result to it.

    The job id goes to XCom (key ``aqua_job_id``) as soon as Zuora returns it, with the rendered
    connection id (``aqua_conn_id``) and, before it is sent, the submit (``aqua_submit``); on
    Airflow 3.3+ the same record goes to the task state store
    (:class:`~airflow_provider_zuora_aqua.tasks.job_records.TaskJobRecord`). The task returns the
    final job JSON (XCom ``return_value``); download the files with the batches' ``fileId``.

    When the task stops, the job stops with it:

    * killed (SIGTERM: marked failed or success, cleared, ``execution_timeout``): ``on_kill``
      sends one short cancel;
    * ``job_timeout`` reached, or waiting fails for good (job gone, credentials refused): the job
      is cancelled, then the task fails. Transient failures (connection, ``429``, ``5xx``) that
      outlast the hook's retries do not end the wait: an outage must not cancel healthy jobs;
    * the task process died (SIGKILL, OOM, lost worker): the failure callback
      :func:`~airflow_provider_zuora_aqua.callbacks.cancel_aqua_job_on_failure`, installed by
      default next to any ``on_failure_callback`` you set, cancels the job.

    Exactly one job per try: every submit carries an ``Idempotency-Key`` derived from the task
    try (:func:`~airflow_provider_zuora_aqua.tasks.try_ids.task_idempotency_key`), so a submit
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
    :param use_query_labels: AQuA's ``useQueryLabels``: True writes the CSV header row with the
        object and field API names (``Account.Id``, ``Account.Name``), which stay the same across
        tenants and languages: what data integration should use; False or None (Zuora's default)
        writes the field labels (``Account: Account Balance``). See Zuora's API reference for
        "Submit an aggregate query job".
    :param date_time_utc: Return date-times in UTC.
    :param job_options: Other submit fields as AQuA names them (``nullReplacement``,
        ``offset``, ``incrementalTime``, ``notifyUrl``, ...). (templated)
    :param wait_for_completion: Wait for the job to finish; if False, return right after submit.
    :param poll_interval: Longest wait between two status reads, in seconds. Polls back off
        from 2 s up to this; AQuA quotas favour 30 to 60 s.
    :param job_timeout: Seconds to wait for the job before cancelling it and failing the task;
        also the longest wait for a free job slot when the tenant runs its 50 concurrent jobs
        (each attempt refused for the limit is sent again with a new key; None: wait on).
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
        or success, cleared) cancels the job on Airflow 3.3+, and ``job_timeout`` cancels it too.
    :param timeout: Deprecated name of ``job_timeout``.
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
        job_timeout: float | None = None,
        cancel_on_kill: bool = True,
        cancel_on_task_failure: bool = True,
        zuora_conn_id: str = ZuoraAquaHook.default_conn_name,
        track_id: str | None = None,
        destination: str | ObjectStoragePath | None = None,
        destination_conn_id: str | None = None,
        durable: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: float | None = None,
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
        self.poll_interval = validate_interval("poll_interval", poll_interval)
        self.job_timeout = job_timeout_argument(job_timeout, timeout, operator=type(self).__name__)
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
            self.on_failure_callback = add_callback(self.on_failure_callback, cancel_aqua_job_on_failure)

    @property
    def job_id(self) -> str | None:
        """The id of this try's AQuA job, once Zuora named it."""
        engine: JobEngine | None = self.__dict__.get("_engine")
        held = None if engine is None else engine.job_ids.get(ONE_JOB_SLOT)
        return held or self.__dict__.get("_job_id")

    @job_id.setter
    def job_id(self, job_id: str | None) -> None:
        self.__dict__["_job_id"] = job_id

    def execute(self, context: Context) -> dict[str, Any]:
        body = self._job_request()
        engine, _ = self._engine_and_record(context)
        with engine.cancelling_on_error():
            job = engine.reattach().get(ONE_JOB_SLOT) or engine.submit(
                ONE_JOB_SLOT, body, deadline=None if self.job_timeout is None else time.monotonic() + self.job_timeout
            )
        if not self.wait_for_completion:
            return job
        if self.deferrable:
            self._defer(context, engine)
        with engine.cancelling_on_error():
            finished = engine.wait(ONE_JOB_SLOT)
        return self._finish(context, engine, finished)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: the job's result, a clear failure, or cancel on timeout."""
        checked = AquaJobEvent.from_payload(event)
        engine, record = self._engine_and_record(context)
        limit = deferred_limit(self.job_timeout, self.execution_timeout)
        expected = query_names(record.submit_body)
        hook = engine.hook_for(record.conn_id)
        finished = engine.settle_deferred(ONE_JOB_SLOT, checked, hook, limit, expected=expected)
        return self._finish(context, engine, finished)

    def _engine_and_record(self, context: Context) -> tuple[JobEngine, TaskJobRecord]:
        record = TaskJobRecord.open(context["ti"], self._task_state_store(context), self.zuora_conn_id)
        return self._job_engine(context, OneJobLedger(record), job_timeout=self.job_timeout), record

    def _defer(self, context: Context, engine: JobEngine) -> None:
        """Wait in the triggerer: the task resumes in :meth:`execute_complete`."""
        # Imported only when deferring: DAG files import this module at every parse.
        from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger

        self.defer(
            trigger=AquaJobTrigger(
                job_id=engine.job_ids[ONE_JOB_SLOT],
                zuora_conn_id=engine.hook_of(ONE_JOB_SLOT).zuora_conn_id,
                poll_interval=self.poll_interval,
                end_time=deferral_deadline(self.job_timeout, self.execution_timeout, context),
                track_id=engine.track_id,
                cancel_on_kill=self.cancel_on_kill,
            ),
            # No defer timeout: the trigger enforces ``job_timeout`` itself, so that the job is
            # cancelled (a deferral timeout would fail the task without touching the job).
            method_name="execute_complete",
        )

    def _finish(self, context: Context, engine: JobEngine, finished: Finished) -> dict[str, Any]:
        """
        The ended job: a failure is raised and forgotten; a success is delivered (the job JSON, or
        with a ``destination`` the manifest of its verified files), and forgotten only then: a
        retry after a failed download downloads again and never submits again.
        """
        if finished.job is None:
            engine.release(finished.slot)
            raise AquaJobNotFoundError(f"AQuA job {finished.job_id} no longer exists at Zuora", request_id=None)
        job = finished.job
        reason = job_failure_reason(job, expected=finished.expected)
        if reason is not None:
            engine.release(finished.slot)
            raise AquaJobFailedError(reason, job=job, request_id=finished.request_id)
        log_completed_batches(job, version=str(job.get("version") or self.version), log=self.log)
        result: dict[str, Any] = job
        manifest = None
        if self.destination is not None:
            manifest = download_job_results(
                finished.hook.fetch_file,
                job,
                self.destination,
                destination_conn_id=self.destination_conn_id,
                track_id=engine.track_id,
            )
            result = manifest.to_json()
        self._delivered(context, job, manifest)
        engine.release(finished.slot)
        return result

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


class AquaDownloadResultsOperator(AquaJobOperator):
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
    #: It reads a job another task owns: the failure callback has nothing of its own to cancel.
    owns_aqua_jobs: ClassVar[bool] = False

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
        job = check_deliverable(self.hook.get_job(job_id, track_id=track_id))
        manifest = download_job_results(
            self.hook.fetch_file, job, self.destination, destination_conn_id=self.destination_conn_id, track_id=track_id
        )
        self._delivered(context, job, manifest)
        return manifest.to_json()


class AquaIncrementalExportOperator(AquaJobOperator):
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
    :param lag: How far behind now the newest window ends (a timedelta or seconds). Default 2
        hours, Zuora's own rule for stateless exports with a high-water mark: "set the new high
        water mark to at least 2 hours earlier than the current time. It might take a long time
        for some transactions to be completed" (Zuora, "High water mark approach for AQuA
        stateless queries"). A record committed later than ``lag`` after its ``UpdatedDate`` is
        lost for good; a shorter lag is allowed (fresher windows) and the run's log says so.
    :param max_window: The longest window before it is cut (a timedelta or seconds). Default 30
        days.
    :param format: ``csv``, ``zip`` or ``gzip``.
    :param deleted: Export deleted records too (Zuora keeps them 30 days): True for an
        ``IsDeleted`` column (``Boolean``), or AQuA's ``deleted`` object (``column``, ``format``).
    :param max_active_jobs: AQuA jobs this task runs at once; they count against the tenant's
        50 concurrent stateless jobs. Default 4.
    :param poll_interval: Longest wait between two status reads of a job, in seconds.
    :param job_timeout: Seconds one job may run before it is cancelled and the task fails.
    :param destination_wait: How long to wait (a timedelta or seconds) while another export
        writes the same query to the same destination (it holds the folder's lease, see the
        incremental guide), before failing with
        :class:`~airflow_provider_zuora_aqua.exceptions.AquaDestinationBusyError` naming it.
        Default 1 hour; 0 fails at once.
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
    holds_several_jobs: ClassVar[bool] = True

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
        destination_wait: timedelta | float = DEFAULT_DESTINATION_WAIT,
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
        self.max_window = validate_max_window(max_window)
        self.format = str(format).lower()
        if self.format not in FORMATS:
            raise AquaConfigurationError(f"format {format!r} is not supported; use one of {', '.join(FORMATS)}")
        self.deleted = deleted_column(deleted)
        self.max_active_jobs = max_active_jobs_argument(max_active_jobs)
        self.poll_interval = validate_interval("poll_interval", poll_interval)
        self.job_timeout = job_timeout_argument(job_timeout, None, operator=type(self).__name__)
        self.destination_wait = duration(destination_wait, field="destination_wait")
        self.zuora_conn_id = zuora_conn_id
        self.track_id = track_id
        self.durable = durable
        if cancel_on_task_failure:
            self.on_failure_callback = add_callback(self.on_failure_callback, cancel_aqua_job_on_failure)
        if not templated(queries, cursor, start):
            self._export_arguments()  # refused when the DAG is built, not at the first run

    def execute(self, context: Context) -> list[dict[str, Any]]:
        queries, cursor, start = self._export_arguments()
        jobs = TaskJobSet.open(context["ti"], self._task_state_store(context))
        export = IncrementalExport(
            engine=self._job_engine(context, jobs, job_timeout=self.job_timeout),
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
            lease_holder=LeaseHolder.of_task_instance(context["ti"]),
            lease_wait=self.destination_wait,
        )
        delivered = export.run()
        windows = [delivery.to_json(cursor) for delivery in delivered]
        self._deliveries = [(delivery.job, delivery.manifest) for delivery in delivered]
        record_window_events(context, self.outlets, windows)
        return windows

    def _export_arguments(self) -> tuple[dict[str, str], str, datetime]:
        return export_arguments(self.queries, self.cursor, self.start)
