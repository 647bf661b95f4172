"""AquaSubmitJobOperator against the simulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaConfigurationError,
    AquaError,
    AquaIdempotencyKeyReusedError,
    AquaJobFailedError,
    AquaJobTimeoutError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.tasks.job_records import (
    AQUA_JOB_ID_XCOM_KEY,
    AQUA_SUBMIT_BODY_STATE_KEY,
    AQUA_SUBMIT_KEY_STATE_KEY,
)
from airflow_provider_zuora_aqua.tasks.try_ids import task_idempotency_key
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
from tests.support.fakes import QUERIES, FakeStateStore, FakeTaskInstance, context, submit
from tests.support.jobs import BODY, collect, export, finish_later, submit_keys


class TestSubmitOperator:
    def test_waits_for_completion_and_returns_the_job(self, monkeypatch):
        from airflow_provider_zuora_aqua.simulator import AquaSimulator
        from tests.support.credentials import CLIENT_ID, CLIENT_SECRET

        with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=1.5) as sim:
            monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
            ti = FakeTaskInstance("export")
            store = FakeStateStore()
            job = AquaSubmitJobOperator(task_id="export", queries=QUERIES, poll_interval=0.2).execute(
                context(ti, task_state_store=store)
            )

        assert job["status"] == "completed"
        assert job["batches"][0]["recordCount"] > 0 and job["batches"][0]["fileId"]
        assert ti.xcom[AQUA_JOB_ID_XCOM_KEY] == job["id"]
        assert store == {}  # a finished job is forgotten: a later clear submits anew

    def test_job_id_recorded_before_waiting(self, simulator, aqua_conn):
        ti = FakeTaskInstance("export")
        store = FakeStateStore()
        job = AquaSubmitJobOperator(task_id="export", queries=QUERIES, wait_for_completion=False).execute(
            context(ti, task_state_store=store)
        )
        assert job["status"] == "submitted"
        assert ti.xcom[AQUA_JOB_ID_XCOM_KEY] == job["id"] == store[AQUA_JOB_ID_XCOM_KEY]
        assert simulator.requests_for("get_job") == []

    def test_timeout_cancels_then_fails(self, simulator, aqua_conn):
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, poll_interval=0.2, timeout=1)
        with pytest.raises(AquaJobTimeoutError) as raised:
            operator.execute(context(FakeTaskInstance("export")))
        assert raised.value.job["status"] == "cancelled"
        assert len(simulator.requests_for("delete_job")) == 1

    def test_an_outage_does_not_cancel_the_job_until_the_timeout(self, simulator, aqua_conn):
        simulator.add_fault("get_job", "503", rate=1.0)  # every poll fails, even after the hook's retries
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, poll_interval=0.2, timeout=2)
        with pytest.raises(AquaJobTimeoutError):
            operator.execute(context(FakeTaskInstance("export")))
        simulator.clear_faults()
        assert len(simulator.requests_for("get_job")) > 4  # kept polling past one call's retries
        assert simulator.get_job(operator.job_id)["status"] == "cancelled"

    def test_a_permanent_error_while_waiting_cancels_the_job(self, simulator, aqua_conn):
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, poll_interval=0.2)
        refused = AquaApiError("Zuora answered GET with an error: forbidden", status_code=403)
        with mock.patch.object(operator.hook, "get_job", side_effect=refused):
            with pytest.raises(AquaApiError, match="forbidden"):
                operator.execute(context(FakeTaskInstance("export")))
        assert simulator.get_job(operator.job_id)["status"] == "cancelled"

    def test_sigterm_during_submit_cancels_the_new_job(self, simulator, aqua_conn):
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, wait_for_completion=False)
        submit = operator.hook.submit_job

        def submit_then_killed(*args, **kwargs):
            job = submit(*args, **kwargs)
            operator.on_kill()  # arrives while the POST is in flight: no job id yet
            return job

        with mock.patch.object(operator.hook, "submit_job", side_effect=submit_then_killed):
            with pytest.raises(AquaError, match="killed while submitting"):
                operator.execute(context(FakeTaskInstance("export")))
        assert simulator.get_job(operator.job_id)["status"] == "cancelled"

    def test_on_kill_never_raises_even_without_a_connection(self):
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, zuora_conn_id="missing_conn")
        operator.on_kill()
        operator.job_id = "a" * 32
        operator.on_kill()
        assert operator._stopped.is_set()

    @pytest.mark.parametrize("status", ["error", "aborted", "cancelled"])
    def test_job_ending_elsewhere_fails_with_batch_messages(self, simulator, aqua_conn, status):
        ti = FakeTaskInstance("export")
        job_id = AquaSubmitJobOperator(task_id="export", queries=QUERIES, wait_for_completion=False).execute(
            context(ti)
        )["id"]
        simulator.finish_job(job_id, status, message="Invalid field Foo")
        store = FakeStateStore({AQUA_JOB_ID_XCOM_KEY: job_id})

        # A new try finds the ended job in the state store and submits again; let that one end too.
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, poll_interval=0.2)
        threading.Timer(0.5, lambda: simulator.finish_job(simulator.job_ids()[-1], status, "Invalid field Foo")).start()
        with pytest.raises(AquaJobFailedError) as raised:
            operator.execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))
        message = str(raised.value)
        assert f"ended with status '{status}'" in message
        assert "'accounts' " + status + ": Invalid field Foo" in message
        assert "Zuora-Request-Id" in message
        assert len(simulator.requests_for("submit")) == 2

    def test_retry_reattaches_to_a_running_job(self, simulator, aqua_conn):
        first = AquaSubmitJobOperator(task_id="export", queries=QUERIES, wait_for_completion=False)
        job_id = first.execute(context(FakeTaskInstance("export")))["id"]
        store = FakeStateStore({AQUA_JOB_ID_XCOM_KEY: job_id})
        threading.Timer(0.5, lambda: simulator.finish_job(job_id, "completed")).start()

        ti = FakeTaskInstance("export", try_number=2)
        job = AquaSubmitJobOperator(task_id="export", queries=QUERIES, poll_interval=0.2).execute(
            context(ti, task_state_store=store)
        )

        assert job["id"] == job_id and job["status"] == "completed"
        assert len(simulator.requests_for("submit")) == 1
        assert ti.xcom[AQUA_JOB_ID_XCOM_KEY] == job_id

    def test_retry_returns_a_completed_job_without_submitting(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.finish_job(job_id, "completed")
        store = FakeStateStore({AQUA_JOB_ID_XCOM_KEY: job_id})

        job = AquaSubmitJobOperator(task_id="export", queries=QUERIES).execute(
            context(FakeTaskInstance("export", try_number=2), task_state_store=store)
        )
        assert job["id"] == job_id
        assert len(simulator.requests_for("submit")) == 1

    def test_on_kill_cancels_quickly_and_never_raises(self, simulator, aqua_conn):
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, wait_for_completion=False)
        job_id = operator.execute(context(FakeTaskInstance("export")))["id"]

        operator.on_kill()
        assert simulator.get_job(job_id)["status"] == "cancelled"
        simulator.stop()  # Zuora unreachable: on_kill logs and returns
        second = AquaSubmitJobOperator(task_id="export", queries=QUERIES)
        second.job_id = "f" * 32
        second.on_kill()
        assert second.job_id == "f" * 32

    @pytest.mark.parametrize(
        ("kwargs", "argument"),
        [
            ({"queries": {}}, "queries"),
            ({"format": "xml"}, "format"),
            ({"version": "1.1"}, "partner/project"),
            ({"job_name": "n" * 40}, "job_name"),
        ],
    )
    def test_invalid_arguments_fail_before_any_request(self, simulator, aqua_conn, kwargs, argument):
        operator = AquaSubmitJobOperator(task_id="export", **{"queries": QUERIES, **kwargs})
        with pytest.raises(AquaConfigurationError, match=argument):
            operator.execute(context(FakeTaskInstance("export")))
        assert simulator.requests == []

    def test_failure_callback_installed_next_to_the_users(self):
        def mine(context: object) -> None:
            pass

        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, on_failure_callback=mine)
        assert operator.on_failure_callback == [mine, cancel_aqua_job_on_failure]
        opted_out = AquaSubmitJobOperator(task_id="x", queries=QUERIES, cancel_on_task_failure=False)
        assert not opted_out.on_failure_callback


def test_a_lost_submit_answer_is_sent_again_and_the_task_goes_on_with_the_one_job(simulator, aqua_conn):
    simulator.add_fault("submit", "lost_answer", count=1)
    ti = FakeTaskInstance("export")

    job = export().execute(context(ti, task_state_store=FakeStateStore()))

    assert simulator.job_ids() == [job["id"]]
    keys = submit_keys(simulator)
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("airflow-aqua-submit.dag.export.")
    assert [request.fault for request in simulator.requests_for("submit")] == ["lost_answer", None]


def test_a_409_while_the_first_request_is_in_progress_is_waited_out(monkeypatch):
    # The first answer comes after 2.5 s; the client gives up after 1 s and sends again, meeting
    # the first request still in flight (409), then gets the saved answer.
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=60) as sim:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url, timeout=1, retry_backoff=0.5)
        )
        sim.add_fault("submit", "slow", delay=2.5, count=1)

        job = ZuoraAquaHook(CONN_ID).submit_job(BODY, idempotency_key="k-409")

        statuses = [request.status for request in sim.requests_for("submit")]
        assert sim.job_ids() == [job["id"]]
    assert 409 in statuses and statuses[-1] == 200


def test_the_same_key_with_another_body_is_a_clear_error(simulator, aqua_conn):
    hook = ZuoraAquaHook(aqua_conn)
    hook.submit_job(BODY, idempotency_key="k-422")
    other = {**BODY, "format": "gzip"}

    with pytest.raises(AquaIdempotencyKeyReusedError, match="already used with a different request body") as raised:
        hook.submit_job(other, idempotency_key="k-422")

    assert raised.value.status_code == 422 and "k-422" in str(raised.value)
    assert len(simulator.job_ids()) == 1


def test_keys_differ_between_tries_and_are_recorded_before_sending(simulator, aqua_conn):
    store = FakeStateStore()
    first, second = FakeTaskInstance("export", try_number=1), FakeTaskInstance("export", try_number=2)
    simulator.add_fault("submit", 500, count=1)  # an answer lost to a 5xx is sent again, same key

    export(durable=False).execute(context(first, task_state_store=store))
    export().execute(context(second, task_state_store=store))

    keys = submit_keys(simulator)
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]  # the resend within a try keeps its key
    assert ".1." in keys[0] and ".2." in keys[2]  # each names its try
    assert store[AQUA_SUBMIT_KEY_STATE_KEY] == keys[2]  # recorded before it was sent
    assert store[AQUA_SUBMIT_BODY_STATE_KEY]["queries"][0]["query"] == QUERIES["accounts"]


def test_a_retry_recovers_the_job_of_a_try_that_died_before_recording_its_id(simulator, aqua_conn):
    store = FakeStateStore()
    first = FakeTaskInstance("export", try_number=1)
    # The first try recorded its key and body, sent the submit, and died before the answer.
    key = task_idempotency_key(first)
    created = ZuoraAquaHook(aqua_conn).submit_job(_body_of_export(), idempotency_key=key)
    store.set(AQUA_SUBMIT_KEY_STATE_KEY, key)
    store.set(AQUA_SUBMIT_BODY_STATE_KEY, _body_of_export())

    job = export().execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))

    assert job["id"] == created["id"]
    assert simulator.job_ids() == [created["id"]]
    assert store[AQUA_JOB_ID_XCOM_KEY] == created["id"]


def test_a_retry_whose_previous_key_was_refused_submits_anew_with_its_own_key(simulator, aqua_conn):
    store = FakeStateStore()
    ZuoraAquaHook(aqua_conn).submit_job(BODY, idempotency_key="used-with-another-body")
    store.set(AQUA_SUBMIT_KEY_STATE_KEY, "used-with-another-body")
    store.set(AQUA_SUBMIT_BODY_STATE_KEY, _body_of_export())
    second = FakeTaskInstance("export", try_number=2)

    job = export().execute(context(second, task_state_store=store))

    assert len(simulator.job_ids()) == 2 and job["id"] == simulator.job_ids()[-1]
    assert submit_keys(simulator)[-1] not in ("used-with-another-body", None)
    assert submit_keys(simulator)[-1] == store[AQUA_SUBMIT_KEY_STATE_KEY]


def test_durable_false_submits_a_fresh_job_every_try_and_records_nothing(simulator, aqua_conn):
    store = FakeStateStore()
    first = export().execute(context(FakeTaskInstance("export", try_number=1), task_state_store=store))
    recorded = dict(store)

    second = export(durable=False).execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))

    assert second["id"] != first["id"] and len(simulator.job_ids()) == 2
    assert store == recorded  # durable=False neither read nor wrote the store


def test_without_a_state_store_older_airflow_still_submits_with_a_key(simulator, aqua_conn):
    job = export().execute(context(FakeTaskInstance("export")))
    assert simulator.job_ids() == [job["id"]] and submit_keys(simulator)[0]


def _body_of_export() -> dict:
    from airflow_provider_zuora_aqua.jobs.request import build_job_request

    return build_job_request(
        queries=QUERIES,
        job_name=None,
        format="csv",
        version="1.0",
        partner=None,
        project=None,
        use_query_labels=None,
        date_time_utc=None,
        job_options=None,
    )


class TestSubmitWithDestination:
    """With a destination the task returns the manifest; the job id stays until the files landed."""

    @pytest.fixture
    def quick(self, monkeypatch):
        with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.5) as sim:
            monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
            yield sim

    def test_returns_the_manifest_of_the_verified_files(self, quick, tmp_path):
        operator = AquaSubmitJobOperator(
            task_id="export", queries=QUERIES, poll_interval=0.2, destination=str(tmp_path)
        )

        manifest = operator.execute(context(FakeTaskInstance("export"), task_state_store=FakeStateStore()))

        (entry,) = manifest["files"]
        assert manifest["job_id"] == quick.job_ids()[0]
        assert (tmp_path / "_manifest.json").is_file() and (tmp_path / "accounts.csv").is_file()
        assert entry["records"] == quick.get_job(manifest["job_id"])["batches"][0]["recordCount"]

    def test_a_retry_after_a_failed_download_downloads_again_and_never_submits_again(self, quick, tmp_path):
        store = FakeStateStore()
        quick.add_fault("file", 403, count=1)
        first = AquaSubmitJobOperator(task_id="export", queries=QUERIES, poll_interval=0.2, destination=str(tmp_path))
        with pytest.raises(Exception, match="permission"):
            first.execute(context(FakeTaskInstance("export", try_number=1), task_state_store=store))
        assert store[AQUA_JOB_ID_XCOM_KEY] == quick.job_ids()[0]  # kept for the retry

        second = AquaSubmitJobOperator(task_id="export", queries=QUERIES, poll_interval=0.2, destination=str(tmp_path))
        manifest = second.execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))

        assert len(quick.requests_for("submit")) == 1 and manifest["job_id"] == quick.job_ids()[0]
        assert store == {}  # delivered: forgotten


def test_the_completion_log_names_each_batch_with_its_records_and_file(monkeypatch, capsys):
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.5) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        queries = {"accounts": "select Id from Account", "invoices": "select Id from Invoice"}
        job = AquaSubmitJobOperator(task_id="export", queries=queries, poll_interval=0.2).execute(
            context(FakeTaskInstance("export"))
        )

    logged = capsys.readouterr().out  # Airflow's task logger writes to stdout here
    for batch in job["batches"]:
        line = f"batch {batch['name']!r} completed: {batch['recordCount']} records, file {batch['fileId']}"
        assert line in logged


def test_a_destination_without_waiting_is_refused_when_the_dag_is_built():
    with pytest.raises(ValueError, match="destination needs wait_for_completion=True"):
        export(destination="/tmp/never")


class TestDeferrableOperator:
    def test_defers_after_recording_the_job(self, simulator, aqua_conn):
        ti = FakeTaskInstance("export")
        store = FakeStateStore()
        operator = AquaSubmitJobOperator(
            task_id="export", queries=QUERIES, deferrable=True, timeout=60, poll_interval=7
        )
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context(ti, task_state_store=store))

        trigger = deferred.value.trigger
        assert isinstance(trigger, AquaJobTrigger)
        assert trigger.job_id == ti.xcom["aqua_job_id"] == store["aqua_job_id"]
        assert trigger.poll_interval == 7 and trigger.cancel_on_kill
        assert time.time() + 55 < trigger.end_time <= time.time() + 60
        assert deferred.value.timeout is None  # the trigger enforces the timeout, so the job gets cancelled
        assert deferred.value.method_name == "execute_complete"

    def test_execution_timeout_bounds_the_deferred_wait(self, simulator, aqua_conn):
        from datetime import datetime, timedelta, timezone

        ti = FakeTaskInstance("export")
        ti.start_date = datetime.now(timezone.utc)
        operator = AquaSubmitJobOperator(
            task_id="export", queries=QUERIES, deferrable=True, execution_timeout=timedelta(seconds=20)
        )
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context(ti))
        assert abs(deferred.value.trigger.end_time - (ti.start_date.timestamp() + 20)) < 0.01

        event = {"status": "timeout", "job_id": operator.job_id, "job": None, "message": "", "request_id": None}
        with pytest.raises(AquaJobTimeoutError, match="execution_timeout of 0:00:20"):
            operator.execute_complete(context(ti), event)
        assert simulator.get_job(operator.job_id)["status"] == "cancelled"

    async def test_full_deferred_path_returns_the_job(self, simulator, aqua_conn):
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, deferrable=True, poll_interval=0.1)
        store = FakeStateStore()
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context(FakeTaskInstance("export"), task_state_store=store))
        finish_later(simulator, deferred.value.trigger.job_id, "completed")
        [event] = await collect(deferred.value.trigger)

        job = AquaSubmitJobOperator(task_id="export", queries=QUERIES, deferrable=True).execute_complete(
            context(FakeTaskInstance("export"), task_state_store=store), event
        )
        assert job == simulator.get_job(event["job_id"])
        assert store == {}
        assert simulator.requests_for("file") == []

    def test_timeout_event_cancels_then_fails(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        operator = AquaSubmitJobOperator(task_id="export", queries=QUERIES, deferrable=True, timeout=5)
        event = {
            "status": "timeout",
            "job_id": job_id,
            "job": simulator.get_job(job_id),
            "message": "late",
            "request_id": "rid",
        }
        with pytest.raises(AquaJobTimeoutError):
            operator.execute_complete(context(FakeTaskInstance("export")), event)
        assert simulator.get_job(job_id)["status"] == "cancelled"

    def test_failed_job_event_fails_with_batch_messages(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.finish_job(job_id, "error", "Invalid field Foo")
        event = {
            "status": "error",
            "job_id": job_id,
            "job": simulator.get_job(job_id),
            "message": "",
            "request_id": "rid-9",
        }
        with pytest.raises(AquaJobFailedError, match="Invalid field Foo.*rid-9"):
            AquaSubmitJobOperator(task_id="export", queries=QUERIES).execute_complete(
                context(FakeTaskInstance("export")), event
            )

    def test_poll_failed_event_cancels_then_fails(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        event = {
            "status": "poll_failed",
            "job_id": job_id,
            "job": None,
            "message": "Could not read",
            "request_id": None,
        }
        with pytest.raises(AquaError, match="Could not read"):
            AquaSubmitJobOperator(task_id="export", queries=QUERIES).execute_complete(
                context(FakeTaskInstance("export")), event
            )
        assert simulator.get_job(job_id)["status"] == "cancelled"


@contextmanager
def full_tenant(monkeypatch, *, max_retries: int, answer: str = "body") -> Iterator[tuple[AquaSimulator, str]]:
    """A tenant whose one job slot another task's job holds, the connection pointing at it; (simulator, that job)."""
    limits = {"concurrent_job_limit": 1, "job_limit_answer": answer}
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=60, **limits) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url, max_retries=max_retries))
        yield sim, ZuoraAquaHook(CONN_ID).submit_job(BODY)["id"]


@pytest.mark.parametrize("answer", ["body", "429"])
def test_a_full_tenant_is_waited_out_with_a_new_key_and_the_try_goes_on(monkeypatch, answer):
    from airflow_provider_zuora_aqua.jobs import slots

    monkeypatch.setattr(slots, "FIRST_SLOT_WAIT_SECONDS", 0.3)
    with full_tenant(monkeypatch, max_retries=1, answer=answer) as (sim, holder):
        threading.Timer(1.5, sim.finish_job, args=(holder, "completed")).start()
        store = FakeStateStore()

        job = export().execute(context(FakeTaskInstance("export"), task_state_store=store))

        keys = submit_keys(sim)[1:]
        assert len(keys) >= 2 and len(set(keys)) >= 2  # refused attempts, then one accepted with its own key
        assert sim.job_ids() == [holder, job["id"]]  # one job for the try
        assert store[AQUA_SUBMIT_KEY_STATE_KEY] == keys[-1]  # the accepted key is the one recorded


def test_a_full_tenant_past_the_timeout_fails_with_the_refusal(monkeypatch):
    from airflow_provider_zuora_aqua.exceptions import AquaRateLimitError
    from airflow_provider_zuora_aqua.jobs import slots

    monkeypatch.setattr(slots, "FIRST_SLOT_WAIT_SECONDS", 0.2)
    with full_tenant(monkeypatch, max_retries=0) as (sim, _):
        with pytest.raises(AquaRateLimitError, match="limit"):
            export(timeout=1.5).execute(context(FakeTaskInstance("export")))
        assert len(sim.job_ids()) == 1


def test_a_stateful_job_that_comes_back_as_a_full_load_is_warned_about(monkeypatch, capsys):
    """Zuora reloads everything for a new session (or one idle 180 days, or whose query changed): say so."""
    with AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0.3) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        sim.tenant.insert_many("Account", [{"Id": "A1"}, {"Id": "A2"}])

        def run(version: str) -> dict:
            stateful = {"partner": "acme", "project": "p1"} if version == "1.1" else {}
            operator = AquaSubmitJobOperator(
                task_id="export",
                queries={"accounts": "select Id from Account"},
                version=version,
                poll_interval=0.2,
                **stateful,
            )
            return operator.execute(context(FakeTaskInstance("export")))

        first = run("1.1")
        first_log = capsys.readouterr().out
        sim.tenant.clock.advance(60)
        sim.tenant.update("Account", "A1", {"Name": "changed"})
        second = run("1.1")
        second_log = capsys.readouterr().out
        stateless = run("1.0")
        stateless_log = capsys.readouterr().out

    assert first["batches"][0]["full"] is True and second["batches"][0]["full"] is False
    warning = f"AQuA job {first['id']} batch 'accounts' is a full load (full: true), not an increment"
    assert warning in first_log
    for reason in ("session is new", "idle for more than 180 days", "query or deleted column changed"):
        assert reason in first_log
    assert "full load" not in second_log  # an increment: no warning
    assert "full" not in stateless["batches"][0] and "full load" not in stateless_log


@pytest.mark.parametrize("answer", ["body", "429"])
def test_a_retry_after_a_try_stopped_while_waiting_for_a_slot_submits_with_a_fresh_key(monkeypatch, answer):
    """
    Try 1 is killed while the tenant is full; try 2 starts once a slot is free. Zuora keeps a
    refused key's answer (90028) for 24 hours: try 2 must not send it again, but submit anew.
    """
    from airflow_provider_zuora_aqua.jobs import slots

    monkeypatch.setattr(slots, "FIRST_SLOT_WAIT_SECONDS", 5)
    with full_tenant(monkeypatch, max_retries=0, answer=answer) as (sim, holder):
        store = FakeStateStore()
        first = export()
        threading.Timer(0.5, first.on_kill).start()  # SIGTERM while the try waits for a slot
        with pytest.raises(AquaError, match="killed"):
            first.execute(context(FakeTaskInstance("export"), task_state_store=store))
        refused = submit_keys(sim)[1:]
        sim.finish_job(holder, "completed")

        job = export().execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))

        retried = submit_keys(sim)[1 + len(refused) :]
        assert sim.job_ids() == [holder, job["id"]]
        assert not set(retried) & set(refused), "a refused Idempotency-Key was sent again"


def test_a_recorded_submit_zuora_refused_is_replaced_by_a_fresh_key(monkeypatch):
    """A killed try left a submit in the record whose answer was a refusal: the retry spends no try on it."""
    with full_tenant(monkeypatch, max_retries=0) as (sim, holder):
        hook = ZuoraAquaHook(CONN_ID)
        ti = FakeTaskInstance("export")
        key = task_idempotency_key(ti)
        body = export()._job_request()
        with pytest.raises(AquaError, match="limit"):
            hook.submit_job(body, idempotency_key=key)  # Zuora saves this refusal under the key
        store = FakeStateStore({AQUA_SUBMIT_KEY_STATE_KEY: key, AQUA_SUBMIT_BODY_STATE_KEY: body})
        sim.finish_job(holder, "completed")

        job = export().execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))

        assert sim.job_ids() == [holder, job["id"]]
        assert submit_keys(sim).count(key) == 2  # the first send, and the one resend that found it refused
        assert store[AQUA_SUBMIT_KEY_STATE_KEY] != key


@pytest.mark.parametrize("faults", [["lost_answer"], ["lost_answer", "503"]], ids=["lost", "lost_then_503"])
def test_a_rate_limited_resend_of_a_submit_that_may_have_created_its_job_keeps_its_key(aqua_conn, simulator, faults):
    """
    The first send of a key created the job but its answer was lost; a resend got a 429, which
    Zuora answers before it looks at the key. A new key would make a second job: the same key is
    sent again after the wait and finds the first.
    """
    for fault in [*faults, "429"]:
        simulator.add_fault("submit", fault, count=1, retry_after=0 if fault == "429" else None)

    job = export().execute(context(FakeTaskInstance("export")))

    assert simulator.job_ids() == [job["id"]]
    assert len(set(submit_keys(simulator))) == 1


def test_a_retry_whose_resend_of_the_recorded_submit_is_rate_limited_reattaches_to_its_job(aqua_conn, simulator):
    """Try 1 died with its submit in flight (the job was made); try 2's resend of that key got a 429."""
    ti = FakeTaskInstance("export")
    key = task_idempotency_key(ti)
    body = export()._job_request()
    first = ZuoraAquaHook(CONN_ID).submit_job(body, idempotency_key=key)["id"]
    store = FakeStateStore({AQUA_SUBMIT_KEY_STATE_KEY: key, AQUA_SUBMIT_BODY_STATE_KEY: body})
    simulator.add_fault("submit", "429", count=1, retry_after=0)

    job = export().execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))

    assert job["id"] == first
    assert simulator.job_ids() == [first]


@pytest.mark.parametrize("gateway", ["403", "404"])
def test_a_gateway_refusal_after_a_lost_answer_keeps_the_key_for_the_retry(aqua_conn, simulator, gateway):
    """
    The first send made the job, its answer was lost; the resend got a gateway's 403/404 (not kept
    under the key). The try fails with the key kept: the retry finds the job instead of making one.
    """
    simulator.add_fault("submit", "lost_answer", count=1)
    simulator.add_fault("submit", gateway, count=1)
    store = FakeStateStore()
    with pytest.raises(AquaError):
        export().execute(context(FakeTaskInstance("export"), task_state_store=store))

    job = export().execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))

    assert simulator.job_ids() == [job["id"]]
    assert len(set(submit_keys(simulator))) == 1
