"""Operators against real HTTP: the simulator, or a one-route server for the seed's sample."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

from airflow_provider_zuora_aqua.callbacks import (
    AQUA_JOB_ID_XCOM_KEY,
    cancel_aqua_job_on_failure,
)
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaConfigurationError,
    AquaError,
    AquaJobAlreadyFinishedError,
    AquaJobFailedError,
    AquaJobNotFoundError,
    AquaJobTimeoutError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.operators.aqua import AquaCancelJobOperator, AquaSubmitJobOperator
from tests.conftest import CONN_ID, connection_json
from tests.fakes import QUERIES, FakeStateStore, FakeTaskInstance, context, submit

SEED_SAMPLE = json.loads((Path(__file__).parent.parent / "data" / "delete_batch_query_job_sample.json").read_text())


class TestCancelOperator:
    def test_cancels_a_running_job_and_returns_its_json(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        operator = AquaCancelJobOperator(task_id="cancel", job_id=job_id)

        job = operator.execute(context())

        assert job == simulator.get_job(job_id)
        assert job["status"] == "cancelled"
        [delete] = simulator.requests_for("delete_job")
        assert delete.headers["Zuora-Track-Id"] == "airflow.dag.cancel.manual__2026-11-25T10-00-00+00-00.1"

    def test_explicit_track_id(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        AquaCancelJobOperator(task_id="cancel", job_id=job_id, track_id="my-trace-42").execute(context())
        assert simulator.requests_for("delete_job")[0].headers["Zuora-Track-Id"] == "my-trace-42"

    def test_finished_job_succeeds_with_a_warning_by_default(self, simulator, aqua_conn, caplog, capfd):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.finish_job(job_id, "completed")

        job = AquaCancelJobOperator(task_id="cancel", job_id=job_id).execute(context())

        assert job["status"] == "completed"
        out, err = capfd.readouterr()
        assert "the task succeeds because fail_if_finished is False" in caplog.text + out + err

    def test_finished_job_fails_with_fail_if_finished(self, simulator, aqua_conn):
        job_id = submit(ZuoraAquaHook(aqua_conn))
        simulator.finish_job(job_id, "completed")

        with pytest.raises(AquaJobAlreadyFinishedError) as raised:
            AquaCancelJobOperator(task_id="cancel", job_id=job_id, fail_if_finished=True).execute(context())
        assert raised.value.job["status"] == "completed"

    def test_unknown_job_fails_with_a_clear_message(self, simulator, aqua_conn):
        with pytest.raises(AquaJobNotFoundError, match="does not exist"):
            AquaCancelJobOperator(task_id="cancel", job_id="0" * 32).execute(context())

    def test_templated_fields(self):
        assert set(AquaCancelJobOperator.template_fields) >= {"job_id", "track_id"}


@pytest.fixture
def seed_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A server answering the token call and DELETE with the seed's exact 200 sample."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(f"POST {self.path}")
            self._answer({"access_token": "seed-token-abcdef", "token_type": "bearer", "expires_in": 3599})

        def do_DELETE(self) -> None:  # noqa: N802
            seen.append(f"DELETE {self.path}")
            self._answer(SEED_SAMPLE)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(f"http://127.0.0.1:{server.server_port}"))
    yield seen
    server.shutdown()
    server.server_close()


def test_seed_sample_round_trips_through_the_cancel_operator_unchanged(seed_server):
    job = AquaCancelJobOperator(task_id="cancel", job_id=SEED_SAMPLE["id"]).execute(context())

    assert job == SEED_SAMPLE
    assert json.dumps(job, sort_keys=True) == json.dumps(SEED_SAMPLE, sort_keys=True)
    assert seed_server == ["POST /oauth/token", f"DELETE /v1/batch-query/jobs/{SEED_SAMPLE['id']}"]


class TestSubmitOperator:
    def test_waits_for_completion_and_returns_the_job(self, monkeypatch):
        from airflow_provider_zuora_aqua.simulator import AquaSimulator
        from tests.conftest import CLIENT_ID, CLIENT_SECRET

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
