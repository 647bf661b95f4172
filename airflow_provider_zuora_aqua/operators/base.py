"""The bases of the AQuA operators: the hook, and for those that hold jobs, the job engine and ``on_kill``."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_zuora_aqua.compat import BaseOperator
from airflow_provider_zuora_aqua.engine.job_engine import JobEngine
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook, hook_of
from airflow_provider_zuora_aqua.results.delivery import Manifest
from airflow_provider_zuora_aqua.results.lineage import export_lineage, outlet_extra, record_outlet_extras
from airflow_provider_zuora_aqua.tasks.job_records import ONE_JOB_SLOT, OneJobLedger, TaskJobRecord
from airflow_provider_zuora_aqua.tasks.try_ids import task_idempotency_key, task_track_id

if TYPE_CHECKING:
    from airflow.sdk import Context


class AquaBaseOperator(BaseOperator):
    """What every AQuA operator shares: the hook of its connection, made on first use."""

    zuora_conn_id: str

    @property
    def hook(self) -> ZuoraAquaHook:
        return hook_of(self, ZuoraAquaHook)


class AquaJobOperator(AquaBaseOperator):
    """
    An operator whose task holds AQuA jobs through the job engine: ``on_kill`` cancels them, the
    failure callback finds them in the record (``owns_aqua_jobs``), and it delivers their results.
    """

    #: The failure callback cancels the jobs such tasks recorded.
    owns_aqua_jobs: ClassVar[bool] = True
    #: Whether its record holds several jobs at once (``aqua_jobs``) rather than one.
    holds_several_jobs: ClassVar[bool] = False
    cancel_on_kill: bool = True
    durable: bool = True
    #: Each job delivered and the manifest of its files (None: none downloaded).
    _deliveries: Sequence[tuple[Mapping[str, Any], Manifest | None]] = ()

    @property
    def _stopped(self) -> threading.Event:
        """Set by ``on_kill``; made on first use, as Airflow 3.0 deep-copies operators and a lock cannot be."""
        return self.__dict__.setdefault("_stop_event", threading.Event())

    def _job_engine(self, context: Context, ledger: Any, *, job_timeout: float | None) -> JobEngine:
        ti = context["ti"]
        engine = self.__dict__["_engine"] = JobEngine(
            self.hook,
            ledger,
            track_id=getattr(self, "track_id", None) or task_track_id(ti),
            new_key=lambda: task_idempotency_key(ti),
            stopped=self._stopped,
            log=self.log,
            poll_interval=getattr(self, "poll_interval", 30.0),
            job_timeout=job_timeout,
        )
        return engine

    def _task_state_store(self, context: Context) -> Any:
        return context.get("task_state_store") if self.durable else None

    def on_kill(self) -> None:
        """Cancel the task's jobs, in a few seconds at most, and never raise."""
        self._stopped.set()
        engine: JobEngine | None = self.__dict__.get("_engine") or self._engine_of_a_given_job()
        try:
            if engine is None or not engine.in_flight:
                self.log.info("on_kill: no running AQuA job to cancel")
            elif not self.cancel_on_kill:
                self.log.info("on_kill: cancel_on_kill is False, AQuA job(s) %s keep running", list(engine.in_flight))
            else:
                engine.cancel_on_kill()
        except Exception as exc:
            self.log.error("on_kill: could not cancel the AQuA job(s): %s", exc)

    def _engine_of_a_given_job(self) -> JobEngine | None:
        """An engine holding a job id given from outside, before any execute (None: no such id)."""
        job_id = self.__dict__.get("_job_id")
        if not job_id:
            return None
        engine = JobEngine(
            self.hook,
            OneJobLedger(TaskJobRecord()),  # on_kill never writes the record
            track_id=getattr(self, "track_id", None),
            new_key=str,
            stopped=self._stopped,
            log=self.log,
        )
        engine.hold(ONE_JOB_SLOT, {"id": job_id})
        return engine

    def _delivered(self, context: Context, job: Mapping[str, Any], manifest: Manifest | None) -> None:
        """Keep the delivery for lineage, and put its files on the asset event of each outlet."""
        self._deliveries = [(job, manifest)]
        if manifest is not None:
            record_outlet_extras(context, self.outlets, outlet_extra(manifest.job_id, manifest.files))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs: the Zuora objects the jobs' queries read; outputs: the files written, if any."""
        return export_lineage(self.hook.settings.base_url, self._deliveries)
