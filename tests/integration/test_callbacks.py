"""The failure callback against the simulator."""

from __future__ import annotations

from types import SimpleNamespace

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.tasks.record import (
    AQUA_JOB_ID_XCOM_KEY,
    task_idempotency_key,
)
from tests.support.credentials import connection_json
from tests.support.fakes import FakeTaskInstance, submit
from tests.support.jobs import BODY


class TestFailureCallback:
    def test_cancels_the_recorded_running_job(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        ti = FakeTaskInstance("export")
        ti.xcom_push(AQUA_JOB_ID_XCOM_KEY, job_id)

        cancel_aqua_job_on_failure({"ti": ti, "task": SimpleNamespace(zuora_conn_id=aqua_conn)})
        cancel_aqua_job_on_failure({"ti": ti, "task": SimpleNamespace(zuora_conn_id=aqua_conn)})  # idempotent

        assert simulator.get_job(job_id)["status"] == "cancelled"
        assert len(simulator.requests_for("delete_job")) == 1

    def test_no_recorded_job_and_unreachable_zuora_never_raise(self, monkeypatch):
        cancel_aqua_job_on_failure({"ti": FakeTaskInstance("export")})
        monkeypatch.setenv("AIRFLOW_CONN_ZUORA_AQUA_DEFAULT", connection_json("http://127.0.0.1:9", max_retries=0))
        ti = FakeTaskInstance("export")
        ti.xcom_push(AQUA_JOB_ID_XCOM_KEY, "a" * 32)
        cancel_aqua_job_on_failure({"ti": ti})


def test_the_failure_callback_finds_and_cancels_the_job_of_a_submit_whose_answer_never_came(simulator, aqua_conn):
    """A task with no retries killed while its submit was in flight: only the recorded submit names the job."""
    from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
    from airflow_provider_zuora_aqua.tasks.record import AQUA_SUBMIT_XCOM_KEY

    ti = FakeTaskInstance("export")
    key = task_idempotency_key(ti)
    created = ZuoraAquaHook(aqua_conn).submit_job(BODY, idempotency_key=key)
    ti.xcom_push(AQUA_SUBMIT_XCOM_KEY, {"key": key, "body": BODY, "conn_id": aqua_conn})

    cancel_aqua_job_on_failure({"ti": ti})

    assert simulator.job_ids() == [created["id"]]
    assert simulator.get_job(created["id"])["status"] == "cancelled"
