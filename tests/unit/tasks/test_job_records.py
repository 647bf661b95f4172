"""What a task records: the identifiers of its try (Track-Id, Idempotency-Key) and its TaskJobRecord."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.client.request import validate_idempotency_key, validate_track_id
from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.tasks.job_records import (
    AQUA_CONN_ID_XCOM_KEY,
    AQUA_JOB_ID_XCOM_KEY,
    AQUA_JOBS_XCOM_KEY,
    AQUA_SUBMIT_BODY_STATE_KEY,
    AQUA_SUBMIT_KEY_STATE_KEY,
    AQUA_SUBMIT_XCOM_KEY,
    TaskJobRecord,
    TaskJobSet,
)
from airflow_provider_zuora_aqua.tasks.try_ids import task_idempotency_key, task_track_id
from tests.support.fakes import FakeRun, FakeStateStore, FakeTaskInstance


def test_the_key_names_the_try_and_is_unique_to_the_submit():
    ti = FakeTaskInstance("export", try_number=3)
    key = task_idempotency_key(ti)
    assert key.startswith("airflow-aqua-submit.dag.export.manual__2026-11-25T10-00-00+00-00.3.")
    assert key != task_idempotency_key(ti)  # a new submit, a new key: resends read it from the record
    assert validate_idempotency_key(key) == key


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # Names made safe for a header collide; the random part keeps their keys apart.
        (("etl", "zuora.export"), ("etl.zuora", "export")),
        (("売上", "export"), ("請求", "export")),
        (("etl", "export"), ("etl", "export")),  # two Airflow deployments on one tenant
    ],
)
def test_keys_of_tasks_whose_readable_names_collide_differ(first, second):
    one, other = (FakeTaskInstance(task_id, dag_id=dag_id) for dag_id, task_id in (first, second))
    assert task_idempotency_key(one) != task_idempotency_key(other)


def test_long_ids_keep_the_key_within_its_limit():
    first = FakeTaskInstance("t" * 300)
    key = task_idempotency_key(first)
    assert len(key) == 255 and validate_idempotency_key(key) == key
    assert validate_track_id(task_track_id(first)) == task_track_id(first)


@pytest.mark.parametrize("key", ["", " k", "k ", "k\n", "é", "k" * 256, None, 5])
def test_invalid_keys_are_refused_before_sending(key):
    with pytest.raises(AquaConfigurationError, match="Idempotency-Key"):
        validate_idempotency_key(key)


class TestTaskJobRecord:
    """One record, one shape in both stores, per map index."""

    def test_a_submit_then_its_job_are_written_to_both_stores_under_the_documented_keys(self):
        ti, store = FakeTaskInstance("export", map_index=1), FakeStateStore()
        record = TaskJobRecord.open(ti, store, "zuora_prod")
        # Every key is there from the start (the failure callback reads each: no "XCom not found").
        assert ti.xcom == {
            AQUA_CONN_ID_XCOM_KEY: "zuora_prod",
            AQUA_SUBMIT_XCOM_KEY: {},
        }  # {}: no submit yet (3.0 refuses None)
        assert store == {}

        record.submitting("key-1", {"format": "csv"}, "zuora_prod")
        record.submitted("job-1")

        assert ti.xcom == {
            AQUA_CONN_ID_XCOM_KEY: "zuora_prod",
            AQUA_SUBMIT_XCOM_KEY: {"key": "key-1", "body": {"format": "csv"}, "conn_id": "zuora_prod", "map_index": 1},
            AQUA_JOB_ID_XCOM_KEY: "job-1",
        }
        assert store == {
            AQUA_CONN_ID_XCOM_KEY: "zuora_prod",
            AQUA_SUBMIT_KEY_STATE_KEY: "key-1",
            AQUA_SUBMIT_BODY_STATE_KEY: {"format": "csv"},
            AQUA_JOB_ID_XCOM_KEY: "job-1",
        }
        pulled = TaskJobRecord.pull(FakeTaskInstance("other", run=ti.run), "export", 1, "fallback")
        assert pulled == TaskJobRecord(1, "zuora_prod", "job-1", "key-1", {"format": "csv"})

    def test_the_next_try_finds_the_record_with_its_connection_and_mirrors_it_into_its_xcom(self):
        store = FakeStateStore()
        first = TaskJobRecord.open(FakeTaskInstance("export", map_index=0), store, "zuora_prod")
        first.submitting("key-1", {"format": "csv"}, "zuora_prod")
        first.submitted("job-1")

        ti = FakeTaskInstance("export", try_number=2, map_index=0)
        second = TaskJobRecord.open(ti, store, "zuora_staging")  # the template renders otherwise now

        assert (second.job_id, second.conn_id, second.submit_key) == ("job-1", "zuora_prod", "key-1")
        assert ti.xcom[AQUA_JOB_ID_XCOM_KEY] == "job-1" and ti.xcom[AQUA_CONN_ID_XCOM_KEY] == "zuora_prod"
        assert ti.xcom[AQUA_SUBMIT_XCOM_KEY]["key"] == "key-1"

    def test_a_new_submit_drops_the_old_job_id_from_both_stores_and_forget_empties_the_state_store(self):
        store = FakeStateStore({AQUA_JOB_ID_XCOM_KEY: "ended-job"})
        ti = FakeTaskInstance("export", try_number=2)
        record = TaskJobRecord.open(ti, store, "zuora_prod")
        assert ti.xcom[AQUA_JOB_ID_XCOM_KEY] == "ended-job"

        record.submitting("key-2", {"format": "csv"}, "zuora_prod")

        assert AQUA_JOB_ID_XCOM_KEY not in store and ti.xcom[AQUA_JOB_ID_XCOM_KEY] == ""
        pulled = TaskJobRecord.pull(ti, "export", -1, "fallback")
        assert pulled.job_id is None and pulled.submit_key == "key-2" and pulled.names_a_job
        record.submitted("job-2")
        record.forget()
        assert store == {} and ti.xcom[AQUA_JOB_ID_XCOM_KEY] == "job-2"  # XCom keeps it for downstream tasks

    def test_without_a_state_store_only_xcom_is_written(self):
        ti = FakeTaskInstance("export")
        record = TaskJobRecord.open(ti, None, "zuora_prod")
        record.submitting("key-1", {"format": "csv"}, "zuora_prod")
        record.submitted("job-1")
        record.forget()
        assert ti.xcom[AQUA_JOB_ID_XCOM_KEY] == "job-1"

    def test_pull_reads_each_map_index_on_its_own_and_falls_back_for_old_records(self):
        run = FakeRun()
        run.task_instance("export", map_index=0).xcom_push(AQUA_JOB_ID_XCOM_KEY, "job-0")  # no conn id: older release
        run.task_instance("export", map_index=1).xcom_push(AQUA_SUBMIT_XCOM_KEY, {"key": "k", "body": {}})
        reader = run.task_instance("other")

        first, second = (TaskJobRecord.pull(reader, "export", index, "fallback") for index in (0, 1))

        assert (first.job_id, first.conn_id, first.submit_key) == ("job-0", "fallback", None)
        assert (second.job_id, second.conn_id, second.submit_key) == (None, "fallback", "k")
        assert not TaskJobRecord.pull(reader, "export", 2, "fallback").names_a_job


class TestTaskJobSet:
    """Several jobs in flight (the incremental export), in one list under ``aqua_jobs`` in both stores."""

    def test_each_change_is_written_whole_to_both_stores_and_a_retry_finds_it(self):
        ti, store = FakeTaskInstance("changes", map_index=2), FakeStateStore()
        jobs = TaskJobSet.open(ti, store)
        jobs.submitting("Account/w1", "key-1", {"format": "csv"}, "zuora_prod")
        jobs.submitting("Account/w2", "key-2", {"format": "csv"}, "zuora_prod")
        jobs.submitted("Account/w1", "job-1")
        jobs.drop("Account/w2")

        expected = [
            {
                "slot": "Account/w1",
                "job_id": "job-1",
                "conn_id": "zuora_prod",
                "key": "key-1",
                "body": {"format": "csv"},
                "map_index": 2,
            }
        ]
        assert store[AQUA_JOBS_XCOM_KEY] == expected and ti.xcom[AQUA_JOBS_XCOM_KEY] == expected
        retry = FakeTaskInstance("changes", try_number=2, map_index=2)
        again = TaskJobSet.open(retry, store)
        assert again.jobs == {"Account/w1": TaskJobRecord(2, "zuora_prod", "job-1", "key-1", {"format": "csv"})}
        assert retry.xcom[AQUA_JOBS_XCOM_KEY] == expected  # mirrored for the failure callback

    def test_the_callback_pulls_the_entries_and_skips_odd_ones(self):
        ti = FakeTaskInstance("changes")
        ti.xcom_push(
            AQUA_JOBS_XCOM_KEY,
            [
                {"slot": "a", "job_id": "job-1", "conn_id": None},
                "junk",
                {"job_id": "no-slot"},
                {"slot": "b", "key": "k"},
            ],
        )
        records = TaskJobSet.pull(ti, "changes", -1, "fallback")
        assert records == [
            TaskJobRecord(-1, "fallback", "job-1", None, None),
            TaskJobRecord(-1, "fallback", None, None, None),
        ]
