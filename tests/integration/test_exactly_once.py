"""Exactly one AQuA job per try: idempotent submits against the simulator (issue 9, acceptance 1)."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaIdempotencyKeyReusedError
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.tasks.record import (
    AQUA_JOB_ID_XCOM_KEY,
    AQUA_SUBMIT_BODY_STATE_KEY,
    AQUA_SUBMIT_KEY_STATE_KEY,
    task_idempotency_key,
)
from tests.conftest import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
from tests.fakes import QUERIES, FakeStateStore, FakeTaskInstance, context

BODY = {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}


def submit_keys(sim: AquaSimulator) -> list[str | None]:
    return [request.headers.get("Idempotency-Key") for request in sim.requests_for("submit")]


def export(**kwargs: object) -> AquaSubmitJobOperator:
    return AquaSubmitJobOperator(task_id="export", queries=QUERIES, wait_for_completion=False, **kwargs)


def test_a_lost_submit_answer_is_sent_again_and_the_task_goes_on_with_the_one_job(simulator, aqua_conn):
    simulator.add_fault("submit", "lost_answer", count=1)
    ti = FakeTaskInstance("export")

    job = export().execute(context(ti, task_state_store=FakeStateStore()))

    assert simulator.job_ids() == [job["id"]]
    keys = submit_keys(simulator)
    assert len(keys) == 2 and keys[0] == keys[1] == task_idempotency_key(ti)
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
    assert keys == [task_idempotency_key(first)] * 2 + [task_idempotency_key(second)]
    assert task_idempotency_key(first) != task_idempotency_key(second)
    assert store[AQUA_SUBMIT_KEY_STATE_KEY] == task_idempotency_key(second)
    assert store[AQUA_SUBMIT_BODY_STATE_KEY]["queries"][0]["query"] == QUERIES["accounts"]


def test_a_retry_recovers_the_job_of_a_try_that_died_before_recording_its_id(simulator, aqua_conn):
    store = FakeStateStore()
    first = FakeTaskInstance("export", try_number=1)
    # The first try recorded its key and body, sent the submit, and died before the answer.
    created = ZuoraAquaHook(aqua_conn).submit_job(_body_of_export(), idempotency_key=task_idempotency_key(first))
    store.set(AQUA_SUBMIT_KEY_STATE_KEY, task_idempotency_key(first))
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
    assert submit_keys(simulator)[-1] == task_idempotency_key(second)


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
    """Issue 8: with a destination the task returns the manifest; the job id stays until the files landed."""

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
