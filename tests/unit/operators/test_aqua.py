"""The operators as adapters: their arguments, their context and their result, against a scripted Zuora."""

from __future__ import annotations

import ast
import inspect
import math
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_zuora_aqua.callbacks import cancel_aqua_job_on_failure
from airflow_provider_zuora_aqua.compat import AirflowProviderDeprecationWarning
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaError,
    AquaJobAlreadyFinishedError,
    AquaJobError,
    AquaJobFailedError,
    AquaJobNotFoundError,
    AquaJobTimeoutError,
)
from airflow_provider_zuora_aqua.jobs.event import AquaJobEvent
from airflow_provider_zuora_aqua.operators import aqua as operators_module
from airflow_provider_zuora_aqua.operators import base as operator_base
from airflow_provider_zuora_aqua.operators.aqua import (
    AquaCancelJobOperator,
    AquaDownloadResultsOperator,
    AquaIncrementalExportOperator,
    AquaSubmitJobOperator,
)
from airflow_provider_zuora_aqua.tasks.job_records import (
    AQUA_CONN_ID_XCOM_KEY,
    AQUA_JOB_ID_XCOM_KEY,
    AQUA_SUBMIT_KEY_STATE_KEY,
)
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger
from tests.support.fakes import QUERIES, FakeStateStore, FakeTaskInstance, context
from tests.support.stubs import ScriptedZuora, hook_class, job


@pytest.fixture
def zuora(monkeypatch) -> ScriptedZuora:
    """Every hook an operator makes answers from this script."""
    zuora = ScriptedZuora()
    monkeypatch.setattr(operator_base, "ZuoraAquaHook", hook_class(zuora))
    return zuora


def submit_operator(**kwargs) -> AquaSubmitJobOperator:
    return AquaSubmitJobOperator(**{"task_id": "export", "queries": QUERIES, "poll_interval": 0.01, **kwargs})


def export_operator(tmp_path: Path, **kwargs) -> AquaIncrementalExportOperator:
    arguments = {
        "task_id": "incremental",
        "queries": {"accounts": "select Id from Account"},
        "destination": str(tmp_path),
        "start": "2024-01-01T00:00:00Z",
        **kwargs,
    }
    return AquaIncrementalExportOperator(**arguments)


JOB_OPERATORS = {
    "submit": lambda tmp_path, **kwargs: submit_operator(**kwargs),
    "incremental": export_operator,
}


class TestArguments:
    @pytest.mark.parametrize("operator", sorted(JOB_OPERATORS))
    @pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, True, "30"])
    def test_poll_interval_is_refused_with_its_name_in_both_operators(self, tmp_path, zuora, operator, value):
        with pytest.raises(AquaConfigurationError, match="poll_interval"):
            JOB_OPERATORS[operator](tmp_path, poll_interval=value)
        assert zuora.calls == [] and zuora.sessions == 0

    @pytest.mark.parametrize("operator", sorted(JOB_OPERATORS))
    @pytest.mark.parametrize("value", [0, -5, math.nan, False, "60"])
    def test_job_timeout_is_refused_with_its_name_in_both_operators(self, tmp_path, operator, value):
        with pytest.raises(AquaConfigurationError, match="job_timeout"):
            JOB_OPERATORS[operator](tmp_path, job_timeout=value)

    @pytest.mark.parametrize("operator", sorted(JOB_OPERATORS))
    def test_job_timeout_is_the_one_name_of_the_job_deadline(self, tmp_path, operator):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert JOB_OPERATORS[operator](tmp_path, job_timeout=90).job_timeout == 90.0
            assert JOB_OPERATORS[operator](tmp_path).job_timeout is None

    def test_timeout_is_a_deprecated_alias_of_job_timeout(self):
        with pytest.warns(AirflowProviderDeprecationWarning, match="job_timeout"):
            operator = submit_operator(timeout=120)
        assert operator.job_timeout == 120.0

    def test_timeout_and_job_timeout_together_are_refused(self):
        with pytest.raises(AquaConfigurationError, match="job_timeout only"):
            submit_operator(timeout=120, job_timeout=60)

    def test_destination_without_waiting_is_refused(self, tmp_path):
        with pytest.raises(AquaConfigurationError, match="wait_for_completion"):
            submit_operator(destination=str(tmp_path), wait_for_completion=False)

    def test_an_invalid_body_is_refused_at_execute_before_any_request(self, zuora):
        operator = submit_operator(queries={})
        with pytest.raises(AquaConfigurationError):
            operator.execute(context(FakeTaskInstance("export")))
        assert zuora.calls == []

    @pytest.mark.parametrize(
        ("operator", "fields"),
        [
            (AquaCancelJobOperator, {"job_id", "zuora_conn_id", "track_id"}),
            (
                AquaSubmitJobOperator,
                {
                    "queries",
                    "job_name",
                    "partner",
                    "project",
                    "job_options",
                    "zuora_conn_id",
                    "track_id",
                    "destination",
                    "destination_conn_id",
                },
            ),
            (
                AquaDownloadResultsOperator,
                {"job_id", "destination", "destination_conn_id", "zuora_conn_id", "track_id"},
            ),
            (
                AquaIncrementalExportOperator,
                {"queries", "destination", "destination_conn_id", "start", "cursor", "zuora_conn_id", "track_id"},
            ),
        ],
    )
    def test_template_fields(self, operator, fields):
        assert set(operator.template_fields) == fields
        assert len(operator.template_fields) == len(fields)


class TestFailureCallback:
    def test_installed_by_default(self, tmp_path):
        for make in JOB_OPERATORS.values():
            assert list(make(tmp_path).on_failure_callback) == [cancel_aqua_job_on_failure]

    def test_installed_once_next_to_the_users(self, tmp_path):
        def mine(context):
            return None

        for make in JOB_OPERATORS.values():
            assert list(make(tmp_path, on_failure_callback=mine).on_failure_callback) == [
                mine,
                cancel_aqua_job_on_failure,
            ]
            given = [mine, cancel_aqua_job_on_failure]
            assert list(make(tmp_path, on_failure_callback=given).on_failure_callback) == given

    def test_left_out_when_asked(self, tmp_path):
        for make in JOB_OPERATORS.values():
            callbacks = make(tmp_path, cancel_on_task_failure=False).on_failure_callback
            assert cancel_aqua_job_on_failure not in (callbacks or [])


class TestSubmitExecute:
    def test_submits_waits_and_returns_the_job_then_forgets_it(self, zuora):
        zuora.reads["job-1"] = [job("job-1", "executing"), job("job-1", "completed", batch="accounts")]
        ti, store = FakeTaskInstance("export"), FakeStateStore()
        operator = submit_operator()

        result = operator.execute(context(ti, task_state_store=store))

        assert result["id"] == "job-1" and result["status"] == "completed"
        assert [call.method for call in zuora.calls] == ["submit", "get", "get"]
        assert zuora.calls[0].body["queries"][0]["query"] == QUERIES["accounts"]
        assert ti.xcom[AQUA_JOB_ID_XCOM_KEY] == "job-1" and operator.job_id == "job-1"
        assert store == {}  # handled: a later clear submits anew

    def test_without_waiting_the_submitted_job_stays_recorded(self, zuora):
        ti, store = FakeTaskInstance("export"), FakeStateStore()
        result = submit_operator(wait_for_completion=False).execute(context(ti, task_state_store=store))
        assert result["status"] == "submitted" and zuora.calls_of("get") == []
        assert store[AQUA_JOB_ID_XCOM_KEY] == "job-1" and ti.xcom[AQUA_JOB_ID_XCOM_KEY] == "job-1"

    def test_a_refused_submit_fails_the_task_and_leaves_no_key_to_resend(self, zuora):
        zuora.submits = [AquaApiError("ZOQL error", status_code=400)]
        ti, store = FakeTaskInstance("export"), FakeStateStore()
        with pytest.raises(AquaApiError, match="ZOQL"):
            submit_operator().execute(context(ti, task_state_store=store))
        assert AQUA_SUBMIT_KEY_STATE_KEY not in store and ti.xcom["aqua_submit"] == {}
        assert len(zuora.calls) == 1

    def test_a_retry_returns_the_job_an_earlier_try_completed_without_submitting(self, zuora):
        store = FakeStateStore({AQUA_JOB_ID_XCOM_KEY: "job-9", AQUA_CONN_ID_XCOM_KEY: "zuora_aqua_default"})
        zuora.reads["job-9"] = [job("job-9", "completed")]
        result = submit_operator().execute(context(FakeTaskInstance("export", try_number=2), task_state_store=store))
        assert result["id"] == "job-9" and zuora.calls_of("submit") == []

    def test_not_durable_ignores_the_earlier_try(self, zuora):
        store = FakeStateStore({AQUA_JOB_ID_XCOM_KEY: "job-9"})
        submit_operator(wait_for_completion=False, durable=False).execute(context(task_state_store=store))
        assert [call.method for call in zuora.calls] == ["submit"]

    def test_a_failed_job_fails_the_task_and_is_forgotten(self, zuora):
        zuora.reads["job-1"] = [job("job-1", "error", batches=[{"name": "a", "status": "error", "message": "bad"}])]
        store = FakeStateStore()
        with pytest.raises(AquaJobFailedError, match="bad"):
            submit_operator().execute(context(task_state_store=store))
        assert store == {} and zuora.calls_of("cancel") == []

    def test_job_timeout_cancels_the_job(self, zuora):
        with pytest.raises(AquaJobTimeoutError):
            submit_operator(job_timeout=0.03).execute(context())
        assert [call.job_id for call in zuora.calls_of("cancel")] == ["job-1"]

    def test_deferrable_records_the_job_then_defers_to_the_trigger(self, zuora):
        ti = FakeTaskInstance("export")
        operator = submit_operator(deferrable=True, job_timeout=600, zuora_conn_id="zuora_prod", poll_interval=45)

        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context(ti))

        trigger = deferred.value.trigger
        assert isinstance(trigger, AquaJobTrigger)
        assert (trigger.job_id, trigger.zuora_conn_id, trigger.poll_interval) == ("job-1", "zuora_prod", 45.0)
        assert trigger.end_time == pytest.approx(time.time() + 600, abs=5)
        assert trigger.cancel_on_kill is True and trigger.track_id
        assert deferred.value.method_name == "execute_complete"
        assert ti.xcom[AQUA_JOB_ID_XCOM_KEY] == "job-1" and zuora.calls_of("get") == []

    def test_the_deferral_ends_at_execution_timeout_when_it_comes_first(self, zuora):
        ti = FakeTaskInstance("export")
        ti.start_date = datetime.now(timezone.utc) - timedelta(minutes=1)
        operator = submit_operator(deferrable=True, job_timeout=3600, execution_timeout=timedelta(minutes=5))
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context(ti))
        assert deferred.value.trigger.end_time == pytest.approx(ti.start_date.timestamp() + 300, abs=1)


def event(status, job_json=None, **extra) -> dict:
    return AquaJobEvent(status=status, job_id="job-1", job=job_json, message="m", **extra).to_payload()


class TestExecuteComplete:
    @pytest.fixture
    def store(self) -> FakeStateStore:
        """What the deferred try recorded: its job, submitted through another connection."""
        return FakeStateStore({AQUA_JOB_ID_XCOM_KEY: "job-1", AQUA_CONN_ID_XCOM_KEY: "zuora_prod"})

    def complete(self, store, payload, **kwargs):
        operator = submit_operator(deferrable=True, job_timeout=60, **kwargs)
        return operator.execute_complete(context(task_state_store=store), payload)

    def test_a_completed_job_is_returned_and_forgotten(self, zuora, store):
        result = self.complete(store, event("completed", job("job-1", "completed")))
        assert result["id"] == "job-1" and zuora.calls == [] and store == {}

    def test_a_failed_job_fails_the_task(self, zuora, store):
        with pytest.raises(AquaJobFailedError, match="job-1"):
            self.complete(store, event("error", job("job-1", "error")))
        assert zuora.calls_of("cancel") == [] and store == {}

    def test_timeout_cancels_the_job_through_its_connection_then_fails(self, zuora, store):
        with pytest.raises(AquaJobTimeoutError, match="job_timeout of 60 s") as raised:
            self.complete(store, event("timeout", job("job-1", "executing")))
        assert [(call.method, call.job_id, call.conn_id) for call in zuora.calls] == [("cancel", "job-1", "zuora_prod")]
        assert raised.value.job["status"] == "cancelled"

    @pytest.mark.parametrize("error", [AquaAuthenticationError, AquaJobNotFoundError])
    def test_poll_failed_cancels_the_job_then_raises_the_events_error_class(self, zuora, store, error):
        payload = event("poll_failed", error=error.__name__, status_code=401, request_id="req-9")
        with pytest.raises(error) as raised:
            self.complete(store, payload)
        assert type(raised.value) is error and raised.value.request_id == "req-9"
        assert [(call.method, call.job_id) for call in zuora.calls] == [("cancel", "job-1")]

    def test_an_odd_event_is_an_aqua_error(self, zuora, store):
        with pytest.raises(AquaError, match="invalid event"):
            self.complete(store, {"status": "completed"})


class TestOnKill:
    def test_before_any_job_it_cancels_nothing_and_never_raises(self, zuora):
        operator = submit_operator()
        operator.on_kill()
        assert zuora.calls == [] and operator._stopped.is_set()

    def test_a_held_job_is_cancelled(self, zuora):
        operator = submit_operator(wait_for_completion=False)
        operator.execute(context())
        operator.on_kill()
        assert [call.job_id for call in zuora.calls_of("cancel")] == ["job-1"]

    def test_a_job_whose_end_was_handled_is_not_cancelled(self, zuora):
        zuora.reads["job-1"] = [job("job-1", "completed", batch="accounts")]
        operator = submit_operator()
        operator.execute(context())
        operator.on_kill()
        assert zuora.calls_of("cancel") == []

    def test_cancel_on_kill_false_leaves_the_job(self, zuora):
        operator = submit_operator(wait_for_completion=False, cancel_on_kill=False)
        operator.execute(context())
        operator.on_kill()
        assert zuora.calls_of("cancel") == []

    def test_a_failing_cancel_is_not_raised(self, zuora, monkeypatch):
        operator = submit_operator(wait_for_completion=False)
        operator.execute(context())
        tried = []

        def broken() -> None:
            tried.append(True)
            raise RuntimeError("signal handler trouble")

        monkeypatch.setattr(operator.__dict__["_engine"], "cancel_on_kill", broken)
        operator.on_kill()
        assert tried == [True] and operator._stopped.is_set()


class TestCancelOperator:
    @pytest.fixture
    def finished(self, zuora) -> ScriptedZuora:
        zuora.cancels["job-1"] = AquaJobAlreadyFinishedError("already finished", job=job("job-1", "completed"))
        return zuora

    def test_cancels_the_job(self, zuora):
        result = AquaCancelJobOperator(task_id="cancel", job_id="job-1").execute(context())
        assert result["status"] == "cancelled" and [call.method for call in zuora.calls] == ["cancel_job"]

    def test_a_finished_job_succeeds_with_its_json_by_default(self, finished):
        assert AquaCancelJobOperator(task_id="cancel", job_id="job-1").execute(context())["status"] == "completed"

    def test_fail_if_finished(self, finished):
        with pytest.raises(AquaJobAlreadyFinishedError):
            AquaCancelJobOperator(task_id="cancel", job_id="job-1", fail_if_finished=True).execute(context())


class TestDownloadOperator:
    @pytest.mark.parametrize(
        ("answer", "error"),
        [(job("job-1", "executing"), AquaJobError), (job("job-1", "error"), AquaJobFailedError)],
    )
    def test_a_job_not_completed_is_refused_before_any_file_request(self, zuora, tmp_path, answer, error):
        zuora.reads["job-1"] = [answer]
        destination = tmp_path / "out"
        with pytest.raises(error):
            AquaDownloadResultsOperator(task_id="download", job_id="job-1", destination=str(destination)).execute(
                context()
            )
        assert [call.method for call in zuora.calls] == ["get"] and zuora.file_requests == []
        assert not destination.exists()

    def test_it_owns_no_job(self):
        assert AquaDownloadResultsOperator.owns_aqua_jobs is False


def lines_without_docstring(cls: type) -> int:
    source = inspect.getsource(cls)
    node = ast.parse(source).body[0]
    docstring = node.body[0] if ast.get_docstring(node) is not None else None
    excluded = 0 if docstring is None else docstring.end_lineno - docstring.lineno + 1
    return len(source.splitlines()) - excluded


@pytest.mark.parametrize(
    "operator",
    [
        AquaCancelJobOperator,
        AquaSubmitJobOperator,
        AquaDownloadResultsOperator,
        AquaIncrementalExportOperator,
    ],
)
def test_each_operator_stays_under_200_lines_without_its_docstring(operator):
    assert lines_without_docstring(operator) < 200


def test_the_line_count_leaves_out_only_the_docstring():
    assert (
        0 < lines_without_docstring(AquaCancelJobOperator) < len(inspect.getsource(AquaCancelJobOperator).splitlines())
    )


def test_the_operators_module_stays_under_600_lines():
    assert len(Path(inspect.getfile(operators_module)).read_text().splitlines()) < 600
