"""cancel_aqua_job_on_failure against a scripted Zuora: the records it reads, what it cancels; it never raises."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from airflow_provider_zuora_aqua import callbacks
from airflow_provider_zuora_aqua.callbacks import CALLBACK_CANCEL_SECONDS, cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.exceptions import AquaIdempotencyKeyReusedError, AquaTransportError
from airflow_provider_zuora_aqua.operators.aqua import (
    AquaDownloadResultsOperator,
    AquaIncrementalExportOperator,
    AquaSubmitJobOperator,
)
from airflow_provider_zuora_aqua.tasks.job_records import (
    AQUA_CONN_ID_XCOM_KEY,
    AQUA_JOB_ID_XCOM_KEY,
    AQUA_JOBS_XCOM_KEY,
    AQUA_SUBMIT_XCOM_KEY,
)
from tests.support.fakes import QUERIES, FakeRun, FakeTaskInstance
from tests.support.stubs import BODY, ScriptedZuora, hook_class, job

ONE_JOB_KEYS = {AQUA_SUBMIT_XCOM_KEY, AQUA_CONN_ID_XCOM_KEY, AQUA_JOB_ID_XCOM_KEY}
UNREACHABLE = AquaTransportError("connection refused", request_sent=False)


class RecordingTaskInstance(FakeTaskInstance):
    """A task instance that remembers every XCom it was asked for: ``(task_id, map_index, key)``."""

    def __init__(self, *args, max_tries: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_tries = max_tries
        self.pulls: list[tuple[str, int | None, str]] = []

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int | None = None, **kwargs: object) -> object:
        self.pulls.append((task_ids, map_indexes, key))
        return super().xcom_pull(task_ids, key, map_indexes, **kwargs)

    def keys_pulled(self, task_id: str) -> set[str]:
        return {key for pulled_task, _, key in self.pulls if pulled_task == task_id}


@pytest.fixture
def zuora(monkeypatch) -> ScriptedZuora:
    zuora = ScriptedZuora()
    monkeypatch.setattr(callbacks, "ZuoraAquaHook", hook_class(zuora))
    return zuora


@pytest.fixture
def submit_task() -> AquaSubmitJobOperator:
    return AquaSubmitJobOperator(task_id="export", queries=QUERIES, zuora_conn_id="zuora_task")


@pytest.fixture
def export_task(tmp_path) -> AquaIncrementalExportOperator:
    return AquaIncrementalExportOperator(
        task_id="incremental",
        queries={"accounts": "select Id from Account"},
        destination=str(tmp_path),
        start="2024-01-01T00:00:00Z",
        zuora_conn_id="zuora_task",
    )


def calls(zuora: ScriptedZuora) -> list[tuple]:
    return [(call.method, call.job_id or call.key, call.conn_id) for call in zuora.calls]


class TestTaskLevel:
    def test_no_record_calls_nothing_and_logs_no_error(self, zuora, submit_task, caplog):
        ti = RecordingTaskInstance("export")
        with caplog.at_level(logging.DEBUG):
            cancel_aqua_job_on_failure({"ti": ti, "task": submit_task})
        assert zuora.calls == [] and zuora.sessions == 0
        assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []
        assert ti.pulls, "the callback looked for a record"

    def test_a_recorded_running_job_is_read_then_cancelled_through_its_connection(self, zuora, submit_task):
        ti = RecordingTaskInstance("export")
        ti.xcom_push(AQUA_JOB_ID_XCOM_KEY, "job-1")
        ti.xcom_push(AQUA_CONN_ID_XCOM_KEY, "zuora_prod")

        cancel_aqua_job_on_failure({"ti": ti, "task": submit_task})

        assert calls(zuora) == [("get", "job-1", "zuora_prod"), ("cancel", "job-1", "zuora_prod")]
        assert all(0 < call.max_seconds <= CALLBACK_CANCEL_SECONDS for call in zuora.calls)

    def test_a_job_that_already_ended_is_only_read(self, zuora, submit_task):
        ti = RecordingTaskInstance("export")
        ti.xcom_push(AQUA_JOB_ID_XCOM_KEY, "job-1")
        zuora.reads["job-1"] = [job("job-1", "error")]
        cancel_aqua_job_on_failure({"ti": ti, "task": submit_task})
        assert calls(zuora) == [("get", "job-1", "zuora_task")]  # no conn recorded: the task's own

    def test_a_recorded_submit_is_sent_again_with_its_key_then_cancelled(self, zuora, submit_task):
        ti = RecordingTaskInstance("export")
        ti.xcom_push(AQUA_SUBMIT_XCOM_KEY, {"key": "the-key", "body": BODY, "conn_id": "zuora_prod"})
        zuora.submits = [job("job-5", "submitted")]

        cancel_aqua_job_on_failure({"ti": ti, "task": submit_task})

        assert calls(zuora) == [
            ("submit", "the-key", "zuora_prod"),
            ("get", "job-5", "zuora_prod"),
            ("cancel", "job-5", "zuora_prod"),
        ]
        assert zuora.calls[0].body == BODY

    def test_a_refused_resend_names_no_job_and_cancels_nothing(self, zuora, submit_task):
        ti = RecordingTaskInstance("export")
        ti.xcom_push(AQUA_SUBMIT_XCOM_KEY, {"key": "spent", "body": BODY, "conn_id": "zuora_prod"})
        zuora.submits = [AquaIdempotencyKeyReusedError("422", status_code=422)]
        cancel_aqua_job_on_failure({"ti": ti, "task": submit_task})
        assert [call.method for call in zuora.calls] == ["submit"]

    def test_every_job_of_the_incremental_exports_set_is_cancelled(self, zuora, export_task):
        ti = RecordingTaskInstance("incremental")
        ti.xcom_push(
            AQUA_JOBS_XCOM_KEY,
            [
                {"slot": "w1", "job_id": None, "conn_id": "zuora_prod", "key": "k2", "body": BODY},
                {"slot": "w2", "job_id": "job-1", "conn_id": "zuora_prod", "key": "k1", "body": BODY},
                {"slot": "w3", "job_id": "job-3", "conn_id": None},
            ],
        )
        zuora.submits = [job("job-2", "submitted")]

        cancel_aqua_job_on_failure({"ti": ti, "task": export_task})

        assert calls(zuora) == [
            # known jobs first; a job recorded without a connection goes through the task's
            ("get", "job-1", "zuora_prod"),
            ("cancel", "job-1", "zuora_prod"),
            ("get", "job-3", "zuora_task"),
            ("cancel", "job-3", "zuora_task"),
            ("submit", "k2", "zuora_prod"),
            ("get", "job-2", "zuora_prod"),
            ("cancel", "job-2", "zuora_prod"),
        ]

    def test_a_submit_task_is_asked_only_for_its_keys(self, zuora, submit_task):
        ti = RecordingTaskInstance("export")
        cancel_aqua_job_on_failure({"ti": ti, "task": submit_task})
        assert ti.keys_pulled("export") == ONE_JOB_KEYS

    def test_an_incremental_task_is_asked_only_for_its_set(self, zuora, export_task):
        ti = RecordingTaskInstance("incremental")
        cancel_aqua_job_on_failure({"ti": ti, "task": export_task})
        assert ti.keys_pulled("incremental") == {AQUA_JOBS_XCOM_KEY}


class TestRetries:
    @pytest.fixture
    def recorded(self) -> RecordingTaskInstance:
        """Try 1 of a task with 2 retries, which recorded its running job."""
        ti = RecordingTaskInstance("export", try_number=1, max_tries=2)
        ti.xcom_push(AQUA_JOB_ID_XCOM_KEY, "job-1")
        return ti

    def test_a_retry_still_to_come_on_a_durable_task_keeps_the_job(self, zuora, submit_task, recorded, monkeypatch):
        monkeypatch.setattr(callbacks, "HAS_TASK_STATE_STORE", True)
        cancel_aqua_job_on_failure({"ti": recorded, "task": submit_task})
        assert zuora.calls == [] and recorded.pulls == []

    def test_the_last_try_cancels(self, zuora, submit_task, recorded, monkeypatch):
        monkeypatch.setattr(callbacks, "HAS_TASK_STATE_STORE", True)
        recorded.try_number = 3
        cancel_aqua_job_on_failure({"ti": recorded, "task": submit_task})
        assert [call.method for call in zuora.calls] == ["get", "cancel"]

    def test_a_retry_that_will_not_reattach_cancels(self, zuora, recorded, monkeypatch):
        monkeypatch.setattr(callbacks, "HAS_TASK_STATE_STORE", True)
        task = AquaSubmitJobOperator(task_id="export", queries=QUERIES, durable=False)
        cancel_aqua_job_on_failure({"ti": recorded, "task": task})
        assert [call.method for call in zuora.calls] == ["get", "cancel"]

    def test_without_a_task_state_store_a_retry_submits_anew_so_the_job_is_cancelled(
        self, zuora, submit_task, recorded, monkeypatch
    ):
        monkeypatch.setattr(callbacks, "HAS_TASK_STATE_STORE", False)
        cancel_aqua_job_on_failure({"ti": recorded, "task": submit_task})
        assert [call.method for call in zuora.calls] == ["get", "cancel"]


class StubDag:
    def __init__(self, *tasks) -> None:
        self.task_dict = {task.task_id: task for task in tasks}
        self.task_ids = list(self.task_dict)


class TestDagLevel:
    def test_every_aqua_task_of_the_run_is_read_and_its_jobs_cancelled(self, zuora, submit_task, export_task, tmp_path):
        run = FakeRun()
        run.task_instance("export").xcom_push(AQUA_JOB_ID_XCOM_KEY, "job-1")
        run.task_instance("incremental").xcom_push(AQUA_JOBS_XCOM_KEY, [{"slot": "w", "job_id": "job-2"}])
        download = AquaDownloadResultsOperator(task_id="download", job_id="job-1", destination=str(tmp_path))
        other = SimpleNamespace(task_id="other", template_fields=("bash_command",))
        mapped = SimpleNamespace(
            task_id="mapped",
            is_mapped=True,
            operator_class=AquaSubmitJobOperator,
            partial_kwargs={"zuora_conn_id": "zuora_mapped"},
        )
        for map_index in (0, 1):
            run.task_instance("mapped", map_index).xcom_push(AQUA_JOB_ID_XCOM_KEY, f"mapped-{map_index}")
        ti = RecordingTaskInstance("download", run=run)
        dag = StubDag(submit_task, export_task, download, other, mapped)

        cancel_aqua_job_on_failure({"ti": ti, "dag": dag, "reason": "task_failure"})

        assert ti.keys_pulled("export") == ONE_JOB_KEYS
        assert ti.keys_pulled("incremental") == {AQUA_JOBS_XCOM_KEY}
        assert ti.keys_pulled("download") == set() and ti.keys_pulled("other") == set()
        assert {map_index for task_id, map_index, _ in ti.pulls if task_id == "mapped"} == {0, 1}
        assert sorted((call.job_id, call.conn_id) for call in zuora.calls_of("cancel")) == [
            ("job-1", "zuora_task"),
            ("job-2", "zuora_task"),
            ("mapped-0", "zuora_mapped"),
            ("mapped-1", "zuora_mapped"),
        ]

    def test_a_dag_level_callback_cancels_even_while_a_retry_is_to_come(self, zuora, submit_task, monkeypatch):
        """The run failed: no retry of any of its task instances will come."""
        monkeypatch.setattr(callbacks, "HAS_TASK_STATE_STORE", True)
        run = FakeRun()
        run.task_instance("export").xcom_push(AQUA_JOB_ID_XCOM_KEY, "job-1")
        ti = RecordingTaskInstance("export", run=run, try_number=1, max_tries=3)
        cancel_aqua_job_on_failure({"ti": ti, "dag": StubDag(submit_task), "reason": "task_failure"})
        assert [call.method for call in zuora.calls] == ["get", "cancel"]


class TestNeverRaises:
    def test_unreachable_zuora(self, zuora, export_task, caplog):
        ti = RecordingTaskInstance("incremental")
        ti.xcom_push(
            AQUA_JOBS_XCOM_KEY,
            [{"slot": "a", "job_id": "job-1", "conn_id": "c"}, {"slot": "b", "key": "k", "body": BODY, "conn_id": "c"}],
        )
        zuora.reads["job-1"] = [UNREACHABLE]
        zuora.submits = [UNREACHABLE]

        cancel_aqua_job_on_failure({"ti": ti, "task": export_task})

        assert [call.method for call in zuora.calls] == ["get", "submit"]
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
        assert len(errors) == 2 and all("connection refused" in message for message in errors)

    def test_a_failing_cancel(self, zuora, submit_task):
        ti = RecordingTaskInstance("export")
        ti.xcom_push(AQUA_JOB_ID_XCOM_KEY, "job-1")
        zuora.cancels["job-1"] = UNREACHABLE
        cancel_aqua_job_on_failure({"ti": ti, "task": submit_task})
        assert [call.method for call in zuora.calls] == ["get", "cancel"]

    def test_a_record_that_cannot_be_read(self, zuora, submit_task, caplog):
        ti = RecordingTaskInstance("export")
        ti.xcom_pull = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("supervisor gone"))
        cancel_aqua_job_on_failure({"ti": ti, "task": submit_task})
        assert zuora.calls == [] and "supervisor gone" in caplog.text

    @pytest.mark.parametrize("given", [None, {}, {"ti": None}])
    def test_no_task_instance(self, zuora, given):
        cancel_aqua_job_on_failure(given)
        assert zuora.calls == []
