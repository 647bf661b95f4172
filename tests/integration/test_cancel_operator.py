"""AquaCancelJobOperator against real HTTP: the simulator, or a one-route server for the seed's sample."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.exceptions import (
    AquaJobAlreadyFinishedError,
    AquaJobNotFoundError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.operators.aqua import AquaCancelJobOperator
from tests.support.credentials import CONN_ID, connection_json
from tests.support.fakes import context, submit
from tests.support.jobs import MISSING, assert_refused_before_any_request

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


@pytest.mark.parametrize("job_id", MISSING)
def test_cancel_operator_refuses_a_missing_job_id(simulator, aqua_conn, job_id):
    operator = AquaCancelJobOperator(task_id="cancel", job_id=job_id)
    assert_refused_before_any_request(lambda: operator.execute(context()), simulator)


def test_a_real_job_id_still_goes_through(simulator, aqua_conn):
    # The check is about the rendered placeholder only: a plain id is sent as before.
    with pytest.raises(AquaJobNotFoundError):
        AquaCancelJobOperator(task_id="cancel", job_id="0" * 32).execute(context())
    assert len(simulator.requests_for("delete_job")) == 1
