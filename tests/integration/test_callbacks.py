"""The failure callback against the simulator."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk import DAG

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.exceptions import AquaApiError
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator
from airflow_provider_zuora_aqua.tasks.job_records import AQUA_JOB_ID_XCOM_KEY, TaskJobRecord
from airflow_provider_zuora_aqua.tasks.try_ids import task_idempotency_key
from tests.support.credentials import connection_json
from tests.support.fakes import QUERIES, FakeRun, FakeTaskInstance, context, submit
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
    from airflow_provider_zuora_aqua.tasks.job_records import AQUA_SUBMIT_XCOM_KEY

    ti = FakeTaskInstance("export")
    key = task_idempotency_key(ti)
    created = ZuoraAquaHook(aqua_conn).submit_job(BODY, idempotency_key=key)
    ti.xcom_push(AQUA_SUBMIT_XCOM_KEY, {"key": key, "body": BODY, "conn_id": aqua_conn})

    cancel_aqua_job_on_failure({"ti": ti})

    assert simulator.job_ids() == [created["id"]]
    assert simulator.get_job(created["id"])["status"] == "cancelled"


def test_a_rate_limited_resend_of_a_recorded_submit_is_sent_again_and_its_job_cancelled(simulator, aqua_conn):
    """The resend of a key that made a job got a 429 (answered before Zuora looks at the key): not a refusal."""
    from airflow_provider_zuora_aqua.tasks.job_records import AQUA_SUBMIT_XCOM_KEY

    ti = FakeTaskInstance("export")
    key = task_idempotency_key(ti)
    created = ZuoraAquaHook(aqua_conn).submit_job(BODY, idempotency_key=key)
    ti.xcom_push(AQUA_SUBMIT_XCOM_KEY, {"key": key, "body": BODY, "conn_id": aqua_conn})
    simulator.add_fault("submit", "429", count=1, retry_after=0)

    cancel_aqua_job_on_failure({"ti": ti})

    assert simulator.job_ids() == [created["id"]]
    assert simulator.get_job(created["id"])["status"] == "cancelled"


class TestDagLevelCallbackPerMapIndex:
    """A mapped AQuA task: every map index's record is read on its own, with its own connection."""

    @pytest.fixture
    def mapped_dag(self):
        from airflow.sdk import DAG

        from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator

        with DAG("dag", schedule=None) as dag:
            AquaSubmitJobOperator.partial(
                task_id="export", queries={"a": "select Id from Account"}, zuora_conn_id="zuora_{{ var.value.env }}"
            ).expand(job_name=["first", "second"])
        return dag

    @pytest.fixture
    def rendered_conn(self, simulator, monkeypatch):
        """``zuora_{{ var.value.env }}`` as the task rendered it; the default connection goes nowhere."""
        monkeypatch.setenv("AIRFLOW_CONN_ZUORA_PROD", connection_json(simulator.base_url))
        monkeypatch.setenv("AIRFLOW_CONN_ZUORA_AQUA_DEFAULT", connection_json("http://127.0.0.1:9", max_retries=0))
        return "zuora_prod"

    def test_a_reattached_index_and_an_index_killed_in_its_submit_window_both_have_their_jobs_cancelled(
        self, simulator, rendered_conn, mapped_dag
    ):
        hook, run = ZuoraAquaHook(rendered_conn), FakeRun()
        # Map index 0 re-attached on its retry: this try recorded the job id, and no submit of its own.
        first = run.task_instance("export", map_index=0, try_number=2)
        first_job = hook.submit_job(BODY, idempotency_key=task_idempotency_key(FakeTaskInstance("export", 1, 0)))
        TaskJobRecord.open(first, None, rendered_conn).submitted(first_job["id"])
        # Map index 1 recorded its submit and sent it; the task died before the answer came back.
        second = run.task_instance("export", map_index=1)
        key = task_idempotency_key(second)
        TaskJobRecord.open(second, None, rendered_conn).submitting(key, BODY, rendered_conn)
        second_job = hook.submit_job(BODY, idempotency_key=key)

        cancel_aqua_job_on_failure({"ti": second, "dag": mapped_dag, "reason": "task_failure"})

        assert simulator.get_job(first_job["id"])["status"] == "cancelled"
        assert simulator.get_job(second_job["id"])["status"] == "cancelled"
        assert sorted(simulator.job_ids()) == sorted([first_job["id"], second_job["id"]])  # the resend named it

    def test_a_task_level_callback_uses_the_rendered_connection_recorded_with_the_job(
        self, simulator, rendered_conn, mapped_dag
    ):
        ti = FakeRun().task_instance("export", map_index=1)
        job_id = submit(ZuoraAquaHook(rendered_conn))
        TaskJobRecord.open(ti, None, rendered_conn).submitted(job_id)

        cancel_aqua_job_on_failure({"ti": ti, "task": mapped_dag.task_dict["export"]})

        assert simulator.get_job(job_id)["status"] == "cancelled"

    def test_the_submit_operator_records_the_rendered_connection_the_callback_cancels_through(
        self, simulator, rendered_conn, mapped_dag
    ):
        run = FakeRun()
        job_ids = []
        for map_index in (0, 1):
            # As the task runs it: templates rendered, so zuora_conn_id is the real connection id.
            operator = AquaSubmitJobOperator(
                task_id="export", queries=QUERIES, wait_for_completion=False, zuora_conn_id=rendered_conn
            )
            job_ids.append(operator.execute(context(run.task_instance("export", map_index=map_index)))["id"])

        cancel_aqua_job_on_failure({"ti": run.task_instance("export", 0), "dag": mapped_dag, "reason": "failed"})

        assert [simulator.get_job(job_id)["status"] for job_id in job_ids] == ["cancelled", "cancelled"]


class TestWhatTheCallbackSendsAgain:
    def test_a_submit_zuora_refused_is_not_sent_again_after_the_failure(self, simulator, aqua_conn, caplog):
        ti = FakeTaskInstance("export")
        operator = AquaSubmitJobOperator(task_id="export", queries={"a": "select Id from Account where Name = 'x"})
        with pytest.raises(AquaApiError):
            operator.execute(context(ti))
        submits = len(simulator.requests_for("submit"))

        cancel_aqua_job_on_failure({"ti": ti})

        assert len(simulator.requests_for("submit")) == submits == 1  # the refusal was the answer
        assert simulator.job_ids() == []
        assert "could not find the job" not in caplog.text

    def test_known_jobs_are_cancelled_before_a_submit_stuck_in_progress_uses_the_budget(
        self, simulator, aqua_conn, monkeypatch
    ):
        import threading

        from airflow_provider_zuora_aqua import callbacks

        monkeypatch.setattr(callbacks, "CALLBACK_CANCEL_SECONDS", 4.0)
        run = FakeRun()
        # Map index 0 died with its submit in flight; Zuora still processes it (409 to every resend).
        stuck = run.task_instance("export", map_index=0)
        key = task_idempotency_key(stuck)
        TaskJobRecord.open(stuck, None, aqua_conn).submitting(key, BODY, aqua_conn)
        simulator.add_fault("submit", "slow", delay=8, count=1)
        first_request = threading.Thread(
            target=lambda: ZuoraAquaHook(aqua_conn).submit_job(BODY, idempotency_key=key, max_seconds=20), daemon=True
        )
        first_request.start()
        # Map index 1 recorded its running job.
        known = run.task_instance("export", map_index=1)
        job_id = submit(ZuoraAquaHook(aqua_conn))
        TaskJobRecord.open(known, None, aqua_conn).submitted(job_id)
        with DAG("dag", schedule=None) as dag:
            AquaSubmitJobOperator.partial(task_id="export", queries=QUERIES).expand(job_name=["a", "b"])

        cancel_aqua_job_on_failure({"ti": known, "dag": dag, "reason": "task_failure"})

        assert simulator.get_job(job_id)["status"] == "cancelled"
        first_request.join(20)


def test_the_callback_cancels_every_job_an_incremental_export_had_in_flight(simulator, aqua_conn):
    from airflow_provider_zuora_aqua.tasks.job_records import TaskJobSet

    ti = FakeTaskInstance("changes")
    jobs = TaskJobSet.open(ti, None)
    running = [submit(ZuoraAquaHook(aqua_conn)) for _ in range(2)]
    for number, job_id in enumerate(running):
        jobs.submitting(f"Account/w{number}", f"key-{number}", BODY, aqua_conn)
        jobs.submitted(f"Account/w{number}", job_id)
    # A third window's submit was sent; the task died before the answer.
    key = task_idempotency_key(ti)
    jobs.submitting("Account/w2", key, BODY, aqua_conn)
    unanswered = ZuoraAquaHook(aqua_conn).submit_job(BODY, idempotency_key=key)["id"]

    cancel_aqua_job_on_failure({"ti": ti})

    assert {simulator.get_job(job_id)["status"] for job_id in [*running, unanswered]} == {"cancelled"}
    assert sorted(simulator.job_ids()) == sorted([*running, unanswered])


class TestWhileARetryIsToCome:
    """apache/airflow#65400: a callback run for a try that is not the last leaves the job the retry takes over."""

    def _failed_try(self, simulator, aqua_conn, try_number: int, max_tries: int):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        ti = FakeTaskInstance("export", try_number=try_number)
        ti.max_tries = max_tries
        TaskJobRecord.open(ti, None, aqua_conn).submitted(job_id)
        return job_id, ti

    def test_a_durable_tasks_job_is_left_to_the_retry(self, simulator, aqua_conn, monkeypatch):
        from airflow_provider_zuora_aqua import callbacks

        monkeypatch.setattr(callbacks, "HAS_TASK_STATE_STORE", True)  # Airflow 3.3+: the retry re-attaches
        job_id, ti = self._failed_try(simulator, aqua_conn, try_number=1, max_tries=1)
        cancel_aqua_job_on_failure({"ti": ti, "task": SimpleNamespace(durable=True)})
        assert simulator.get_job(job_id)["status"] in ("submitted", "executing")
        assert simulator.requests_for("delete_job") == []

    def test_the_last_try_cancels_it(self, simulator, aqua_conn):
        job_id, ti = self._failed_try(simulator, aqua_conn, try_number=2, max_tries=1)
        cancel_aqua_job_on_failure({"ti": ti, "task": SimpleNamespace(durable=True)})
        assert simulator.get_job(job_id)["status"] == "cancelled"

    def test_a_task_whose_retry_submits_anew_cancels_it_at_once(self, simulator, aqua_conn, monkeypatch):
        from airflow_provider_zuora_aqua import callbacks

        job_id, ti = self._failed_try(simulator, aqua_conn, try_number=1, max_tries=3)
        cancel_aqua_job_on_failure({"ti": ti, "task": SimpleNamespace(durable=False)})
        assert simulator.get_job(job_id)["status"] == "cancelled"

        other, ti = self._failed_try(simulator, aqua_conn, try_number=1, max_tries=3)
        monkeypatch.setattr(callbacks, "HAS_TASK_STATE_STORE", False)  # before Airflow 3.3: no re-attach
        cancel_aqua_job_on_failure({"ti": ti, "task": SimpleNamespace(durable=True)})
        assert simulator.get_job(other)["status"] == "cancelled"
