"""Sensor that waits for a Zuora AQuA job submitted elsewhere."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_zuora_aqua.compat import AirflowSensorTimeout, BaseSensorOperator, PokeReturnValue, conf
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook, hook_of
from airflow_provider_zuora_aqua.jobs.event import POLL_FAILED, TIMEOUT, AquaJobEvent
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus, check_job_succeeded, validate_interval
from airflow_provider_zuora_aqua.tasks.try_ids import task_track_id

if TYPE_CHECKING:
    from airflow.sdk import Context


class AquaJobSensor(BaseSensorOperator):
    """
    Wait for an AQuA job, by id, to finish; succeed when it ``completed``.

    The job JSON becomes the XCom ``return_value``. A job that ends ``error``, ``aborted`` or
    ``cancelled`` (or with a failed batch) fails the sensor with the batch messages. The
    sensor does not own the job: stopping the sensor never cancels it.

    :param job_id: The AQuA job id. (templated)
    :param zuora_conn_id: The Airflow connection of type ``zuora_aqua``. (templated)
    :param track_id: ``Zuora-Track-Id`` of every call; by default derived from the task try.
        (templated)
    :param deferrable: Wait in the triggerer instead of poking from a worker. Default:
        ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("job_id", "zuora_conn_id", "track_id")

    def __init__(
        self,
        *,
        job_id: str,
        zuora_conn_id: str = ZuoraAquaHook.default_conn_name,
        track_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        if "poke_interval" in kwargs:
            # Checked before the base class turns a bool into seconds: one rule for every interval.
            validate_interval("poke_interval", kwargs["poke_interval"])
        super().__init__(**kwargs)
        validate_interval("poke_interval", self.poke_interval)
        self.job_id = job_id
        self.zuora_conn_id = zuora_conn_id
        self.track_id = track_id
        self.deferrable = deferrable

    @property
    def hook(self) -> ZuoraAquaHook:
        return hook_of(self, ZuoraAquaHook)

    def poke(self, context: Context) -> PokeReturnValue:
        job = self.hook.get_job(self.job_id, track_id=self.track_id or task_track_id(context["ti"]))
        self.log.info("AQuA job %s is %s", self.job_id, job.get("status"))
        if not AquaJobStatus.is_terminal(job.get("status")):
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=check_job_succeeded(job, self.hook.last_request_id))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        end_time = None if self.timeout is None else time.time() + float(self.timeout)
        # Imported only when deferring: DAG files import this module at every parse.
        from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger

        self.defer(
            trigger=AquaJobTrigger(
                job_id=self.job_id,
                zuora_conn_id=self.zuora_conn_id,
                poll_interval=float(self.poke_interval),
                end_time=end_time,
                track_id=self.track_id or task_track_id(context["ti"]),
                cancel_on_kill=False,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: the job JSON, or a clear failure."""
        checked = AquaJobEvent.from_payload(event)
        if checked.status == TIMEOUT:
            raise AirflowSensorTimeout(f"AQuA job {self.job_id} did not finish within {self.timeout} s")
        if checked.status == POLL_FAILED:
            raise checked.error_to_raise()
        return check_job_succeeded(checked.job or {"id": checked.job_id}, checked.request_id)
