"""ZuoraAquaHook against the AQuA simulator over real HTTP."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaJobAlreadyFinishedError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
from tests.support.jobs import submit_keys

QUERY = {"format": "csv", "version": "1.0", "queries": [{"name": "accounts", "query": "select Id, Name from Account"}]}
UNKNOWN_JOB_ID = "0123456789abcdef0123456789abcdef"


def submit_running_job(hook: ZuoraAquaHook, sim: AquaSimulator) -> str:
    job_id = hook.submit_job(QUERY)["id"]
    deadline = time.monotonic() + 5
    while sim.get_job(job_id)["status"] != "executing":
        assert time.monotonic() < deadline, "job never started executing"
        time.sleep(0.05)
    return job_id


def routes(sim: AquaSimulator) -> list[tuple[str, int | None]]:
    return [(request.route, request.status) for request in sim.requests]


@pytest.fixture(params=[False, True], ids=["errors-as-http-status", "errors-as-200-bodies"])
def any_error_style_conn(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A simulator per error style: AQuA's refusals as HTTP 4xx, or as HTTP 200 error bodies."""
    with AquaSimulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=60, errors_as_200=request.param
    ) as sim:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        yield sim


class TestCancel:
    def test_cancel_running_job(self, simulator, aqua_conn):
        hook = ZuoraAquaHook(aqua_conn)
        job_id = submit_running_job(hook, simulator)

        job = hook.cancel_job(job_id, track_id="test-cancel-1")

        assert job["id"] == job_id
        assert job["status"] == "cancelled"
        assert simulator.get_job(job_id)["status"] == "cancelled"
        [delete] = simulator.requests_for("delete_job")
        assert delete.path == f"/v1/batch-query/jobs/{job_id}"
        assert delete.headers["Zuora-Track-Id"] == "test-cancel-1"

    @pytest.mark.parametrize("final_status", ["completed", "error", "cancelled"])
    def test_cancel_finished_job_raises_with_job_json(self, any_error_style_conn, final_status):
        sim = any_error_style_conn
        hook = ZuoraAquaHook(CONN_ID)
        job_id = hook.submit_job(QUERY)["id"]
        sim.finish_job(job_id, final_status)

        with pytest.raises(AquaJobAlreadyFinishedError) as raised:
            hook.cancel_job(job_id)

        assert raised.value.job["id"] == job_id
        assert raised.value.job["status"] == final_status
        assert raised.value.request_id  # Zuora-Request-Id of the refusal
        assert [r.route for r in sim.requests if r.route != "token"] == ["submit", "delete_job", "get_job"]

    def test_cancel_if_running_treats_finished_job_as_done(self, simulator, aqua_conn):
        hook = ZuoraAquaHook(aqua_conn)
        job_id = hook.submit_job(QUERY)["id"]
        simulator.finish_job(job_id, "completed")

        assert hook.cancel_job_if_running(job_id)["status"] == "completed"

    def test_cancel_unknown_job(self, any_error_style_conn):
        with pytest.raises(AquaJobNotFoundError, match=UNKNOWN_JOB_ID):
            ZuoraAquaHook(CONN_ID).cancel_job(UNKNOWN_JOB_ID)

    def test_get_unknown_job(self, any_error_style_conn):
        with pytest.raises(AquaJobNotFoundError) as raised:
            ZuoraAquaHook(CONN_ID).get_job(UNKNOWN_JOB_ID)
        assert raised.value.error_code == "90002"
        # "not found" is final: exactly one GET.
        assert len(any_error_style_conn.requests_for("get_job")) == 1


class TestErrorBodies:
    def test_http_200_error_body_is_an_error_not_a_job(self, simulator, aqua_conn):
        body = {"format": "csv", "version": "1.0", "queries": [{"name": "bad", "query": "selec Id frm Account"}]}
        with pytest.raises(AquaApiError) as raised:
            ZuoraAquaHook(aqua_conn).submit_job(body)
        error = raised.value
        assert error.status_code == 200
        assert error.error_code == "90005"
        assert error.request_id
        assert "90005" in str(error) and error.request_id in str(error)
        assert len(simulator.requests_for("submit")) == 1  # a 200 error body is final


class TestTokens:
    def test_401_fetches_exactly_one_new_token_and_retries_once(self, simulator, aqua_conn):
        hook = ZuoraAquaHook(aqua_conn)
        job_id = hook.submit_job(QUERY)["id"]
        first_token = hook.get_access_token()
        assert simulator.tokens_issued == 1
        simulator.expire_tokens()
        simulator.clear_requests()

        assert hook.get_job(job_id)["id"] == job_id

        assert simulator.tokens_issued == 2
        assert routes(simulator) == [("get_job", 401), ("token", 200), ("get_job", 200)]
        assert hook.get_access_token() != first_token

    def test_token_fetched_once_for_many_calls_across_hooks_and_threads(self, simulator, aqua_conn):
        job_id = ZuoraAquaHook(aqua_conn).submit_job(QUERY)["id"]
        hooks = [ZuoraAquaHook(aqua_conn) for _ in range(6)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            jobs = list(pool.map(lambda i: hooks[i % len(hooks)].get_job(job_id), range(48)))

        assert {job["id"] for job in jobs} == {job_id}
        assert simulator.tokens_issued == 1
        assert len(simulator.requests_for("token")) == 1
        assert len(simulator.requests_for("get_job")) == 48

    def test_bad_credentials_are_a_clear_error(self, simulator, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_BAD_SECRET",
            connection_json(simulator.base_url).replace(CLIENT_SECRET, "not-the-right-secret-123"),
        )
        with pytest.raises(AquaAuthenticationError, match="check its Client ID and Client Secret"):
            ZuoraAquaHook("bad_secret").get_access_token()
        assert len(simulator.requests_for("token")) == 1  # refused credentials are not retried


class TestRetries:
    def test_429_retried_after_retry_after(self, simulator, aqua_conn):
        hook = ZuoraAquaHook(aqua_conn)
        job_id = hook.submit_job(QUERY)["id"]
        simulator.add_fault("get_job", "429", count=2, retry_after=1)
        simulator.clear_requests()

        assert hook.get_job(job_id)["id"] == job_id

        gets = simulator.requests_for("get_job")
        assert [g.status for g in gets] == [429, 429, 200]
        # Retry-After: 1 is honoured (the configured backoff is only 0.05 s).
        assert gets[1].time - gets[0].time >= 0.95
        assert gets[2].time - gets[1].time >= 0.95

    @pytest.mark.parametrize("status", ["500", "502", "503"])
    def test_5xx_retried(self, simulator, aqua_conn, status):
        hook = ZuoraAquaHook(aqua_conn)
        job_id = hook.submit_job(QUERY)["id"]
        simulator.add_fault("get_job", status, count=2)
        simulator.clear_requests()

        assert hook.get_job(job_id)["id"] == job_id
        assert [g.status for g in simulator.requests_for("get_job")] == [int(status), int(status), 200]

    def test_retries_are_bounded(self, simulator, aqua_conn):
        hook = ZuoraAquaHook(aqua_conn)  # max_retries=3
        job_id = hook.submit_job(QUERY)["id"]
        simulator.add_fault("get_job", "503", rate=1.0)

        with pytest.raises(AquaServerError):
            hook.get_job(job_id)
        assert len(simulator.requests_for("get_job")) == 4

    def test_4xx_not_retried(self, simulator, aqua_conn):
        hook = ZuoraAquaHook(aqua_conn)
        job_id = hook.submit_job(QUERY)["id"]
        simulator.finish_job(job_id, "completed")

        with pytest.raises(AquaJobAlreadyFinishedError):
            hook.cancel_job(job_id)
        assert [d.status for d in simulator.requests_for("delete_job")] == [400]

    def test_dropped_connection_retried_for_reads(self, simulator, aqua_conn):
        hook = ZuoraAquaHook(aqua_conn)
        job_id = hook.submit_job(QUERY)["id"]
        simulator.add_fault("get_job", "drop", count=1)

        assert hook.get_job(job_id)["id"] == job_id
        assert [g.fault for g in simulator.requests_for("get_job")] == ["drop", None]

    def test_submit_not_resent_after_the_request_may_have_arrived(self, simulator, aqua_conn):
        simulator.add_fault("submit", "drop", count=1)

        with pytest.raises(AquaTransportError) as raised:
            ZuoraAquaHook(aqua_conn).submit_job(QUERY)
        assert raised.value.request_sent
        assert len(simulator.requests_for("submit")) == 1

    def test_submit_resent_after_429(self, simulator, aqua_conn):
        simulator.add_fault("submit", "429", count=1, retry_after=0)

        job = ZuoraAquaHook(aqua_conn).submit_job(QUERY)

        assert job["status"] == "submitted"
        assert [s.status for s in simulator.requests_for("submit")] == [429, 200]

    @pytest.mark.parametrize("answer", ["body", "429"], ids=["error-90028", "http-429"])
    def test_a_keyed_submit_refused_for_the_job_limit_is_not_resent_with_its_key(self, monkeypatch, answer):
        """Zuora replays a refused key's answer for 24 h: the caller resends with a new key (jobs.slots)."""
        with AquaSimulator(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, concurrent_job_limit=1, job_limit_answer=answer
        ) as sim:
            monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
            hook = ZuoraAquaHook(CONN_ID)  # max_retries=3
            running = hook.submit_job(QUERY, idempotency_key="fills-the-tenant")["id"]

            with pytest.raises(AquaRateLimitError) as raised:
                hook.submit_job(QUERY, idempotency_key="refused-key")

            assert submit_keys(sim).count("refused-key") == 1
            assert raised.value.retry_after is None or 0 <= raised.value.retry_after <= 60
            # Reads keep their retries; and once a slot is free a new key is accepted.
            sim.add_fault("get_job", "429", count=1, retry_after=0)
            assert hook.get_job(running)["id"] == running
            sim.finish_job(running, "completed")
            assert hook.submit_job(QUERY, idempotency_key="a-new-key")["id"] != running

    def test_submit_not_resent_after_500(self, simulator, aqua_conn):
        simulator.add_fault("submit", "500", count=1)

        with pytest.raises(AquaServerError):
            ZuoraAquaHook(aqua_conn).submit_job(QUERY)
        assert len(simulator.requests_for("submit")) == 1

    def test_connection_refused_is_a_clear_transport_error(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_NOBODY", connection_json("http://127.0.0.1:9", max_retries=1))
        with pytest.raises(AquaTransportError, match="could not connect") as raised:
            ZuoraAquaHook("nobody").get_job(UNKNOWN_JOB_ID)
        assert not raised.value.request_sent
        assert raised.value.__cause__ is None  # no requests traceback chained under it


class TestHeaders:
    def test_headers_from_connection_extras_and_track_id(self, simulator, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_TENANT",
            connection_json(
                simulator.base_url,
                entity_ids="8a8082c45aa81b51015ab7a8e54b1c3e",
                org_ids="o1,o2",
                zuora_version="2025-08-20",
            ),
        )
        hook = ZuoraAquaHook("tenant")
        job_id = hook.submit_job(QUERY, track_id="dag.task.run-1")["id"]
        hook.get_job(job_id, track_id="dag.task.run-1")
        hook.cancel_job(job_id, track_id="dag.task.run-1")

        api_requests = [r for r in simulator.requests if r.route != "token"]
        assert [r.route for r in api_requests] == ["submit", "get_job", "delete_job"]
        for request in api_requests:
            assert request.headers["Zuora-Entity-Ids"] == "8a8082c45aa81b51015ab7a8e54b1c3e"
            assert request.headers["Zuora-Org-Ids"] == "o1,o2"
            assert request.headers["Zuora-Version"] == "2025-08-20"
            assert request.headers["Zuora-Track-Id"] == "dag.task.run-1"
            assert request.headers["Accept-Encoding"] == "gzip"
            assert request.status == 200  # the simulator accepted the bearer token

    def test_optional_headers_absent_when_not_configured(self, simulator, aqua_conn):
        ZuoraAquaHook(aqua_conn).submit_job(QUERY)
        [submit] = simulator.requests_for("submit")
        for header in ("Zuora-Entity-Ids", "Zuora-Org-Ids", "Zuora-Version", "Zuora-Track-Id"):
            assert header not in submit.headers

    def test_gzipped_answers_are_read(self, simulator, aqua_conn):
        queries = [
            {"name": f"q{i}", "query": f"select Id, Name, Balance from Account where Id = '{i}'"} for i in range(40)
        ]
        job = ZuoraAquaHook(aqua_conn).submit_job({**QUERY, "queries": queries})
        assert len(job["batches"]) == 40


class TestInputRefusedBeforeAnyRequest:
    @pytest.mark.parametrize(
        "track_id",
        ["x" * 65, "has:colon", "has;semicolon", 'has"quote', "has'apostrophe", "new\nline", "tab\there", "caf\u00e9"],
    )
    def test_invalid_track_id(self, simulator, aqua_conn, track_id):
        with pytest.raises(AquaConfigurationError, match="track_id"):
            ZuoraAquaHook(aqua_conn).get_job(UNKNOWN_JOB_ID, track_id=track_id)
        assert simulator.requests == []

    def test_track_id_of_64_characters_is_valid(self, simulator, aqua_conn):
        with pytest.raises(AquaJobNotFoundError):
            ZuoraAquaHook(aqua_conn).get_job(UNKNOWN_JOB_ID, track_id="x" * 64)
        assert simulator.requests_for("get_job")[0].headers["Zuora-Track-Id"] == "x" * 64

    @pytest.mark.parametrize(
        "job_id", ["", "/", "..", "a/b", "../jobs", "a b", " abc", "abc\r\nX-Evil: 1", "a?b", "a#b", "a%2Fb", None, 42]
    )
    @pytest.mark.parametrize("method", ["get_job", "cancel_job"])
    def test_invalid_job_id(self, simulator, aqua_conn, job_id, method):
        with pytest.raises(AquaConfigurationError, match="job_id"):
            getattr(ZuoraAquaHook(aqua_conn), method)(job_id)
        assert simulator.requests == []


class TestConnection:
    @pytest.mark.parametrize("host", ["http://rest.test.zuora.com", "http://10.0.0.8:8080", "http://example.com"])
    def test_plain_http_to_a_non_loopback_host_is_refused(self, monkeypatch, host):
        monkeypatch.setenv("AIRFLOW_CONN_PLAIN", connection_json(host))
        with pytest.raises(AquaConfigurationError, match="https://"):
            ZuoraAquaHook("plain").get_job(UNKNOWN_JOB_ID)

    @pytest.mark.parametrize(
        "host", ["http://127.0.0.1:1", "http://127.8.9.10:1", "http://localhost:1", "http://[::1]:1"]
    )
    def test_plain_http_to_loopback_is_allowed(self, monkeypatch, host):
        monkeypatch.setenv("AIRFLOW_CONN_LOOP", connection_json(host))
        assert ZuoraAquaHook("loop").settings.base_url == host

    def test_test_connection_against_the_simulator(self, simulator, aqua_conn):
        assert ZuoraAquaHook(aqua_conn).test_connection() == (
            True,
            f"Connected to {simulator.base_url}: Zuora issued an OAuth token.",
        )
        assert len(simulator.requests_for("token")) == 1

    def test_test_connection_reports_refused_credentials(self, simulator, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_BAD", connection_json(simulator.base_url).replace(CLIENT_SECRET, "wrong-secret-value-99")
        )
        ok, message = ZuoraAquaHook("bad").test_connection()
        assert not ok
        assert "Client Secret" in message and "wrong-secret-value-99" not in message

    def test_uri_form_connection(self, simulator, monkeypatch):
        host_port = simulator.base_url.removeprefix("http://")
        monkeypatch.setenv(
            "AIRFLOW_CONN_URI_FORM",
            f"zuora-aqua://http://{CLIENT_ID}:{CLIENT_SECRET}@{host_port}/?entity_ids=e-1&max_retries=1",
        )
        hook = ZuoraAquaHook("uri_form")
        assert hook.settings.base_url == simulator.base_url
        assert hook.settings.max_retries == 1
        hook.submit_job(QUERY)
        assert simulator.requests_for("submit")[0].headers["Zuora-Entity-Ids"] == "e-1"


def test_no_secret_in_captured_logs(simulator, aqua_conn, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    hook = ZuoraAquaHook(aqua_conn)
    job_id = hook.submit_job(QUERY)["id"]
    simulator.expire_tokens()
    simulator.add_fault("get_job", "503", count=1)
    hook.get_job(job_id)
    hook.cancel_job(job_id)
    with pytest.raises(AquaJobAlreadyFinishedError) as raised:
        hook.cancel_job(job_id)
    token = hook.get_access_token()

    out, err = capfd.readouterr()
    captured = caplog.text + out + err + str(raised.value)
    assert "Fetched a Zuora OAuth token" in captured  # the logs were captured
    assert CLIENT_SECRET not in captured
    assert token not in captured
