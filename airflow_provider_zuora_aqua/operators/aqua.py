"""Operators for Zuora AQuA jobs."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_zuora_aqua.exceptions import AquaJobAlreadyFinishedError
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.utils.protocol import task_track_id

if TYPE_CHECKING:
    from airflow.sdk import Context


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
