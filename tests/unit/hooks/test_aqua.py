"""The hook against answer shapes the simulator does not use (Zuora documents none of them)."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaJobAlreadyFinishedError,
    AquaJobNotFoundError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from tests.support.credentials import connection_json

BASE = "https://rest.test.zuora.com"
JOB_ID = "e20b07474688ad5001468daf10e501de"
JOB_URL = f"{BASE}/v1/batch-query/jobs/{JOB_ID}"


@pytest.fixture
def hook(requests_mock, monkeypatch) -> ZuoraAquaHook:
    monkeypatch.setenv("AIRFLOW_CONN_OTHER", connection_json(BASE, max_retries=1))
    requests_mock.post(f"{BASE}/oauth/token", json={"access_token": "tok-123456", "expires_in": 3599})
    return ZuoraAquaHook("other")


def job(status: str) -> dict:
    return {"id": JOB_ID, "status": status, "batches": []}


@pytest.mark.parametrize(
    ("status_code", "body"),
    [
        (409, {"message": "Job already completed"}),
        (400, {"errorCode": "90003", "message": "Invalid Job Id for job cancellation."}),
        (200, {"success": False, "processId": "p1", "reasons": [{"code": 50000030, "message": "completed"}]}),
        (422, None),
    ],
)
def test_refused_cancel_of_a_finished_job(hook, requests_mock, status_code, body):
    requests_mock.delete(JOB_URL, status_code=status_code, json=body, headers={"Zuora-Request-Id": "rid-7"})
    requests_mock.get(JOB_URL, json=job("completed"))

    with pytest.raises(AquaJobAlreadyFinishedError) as raised:
        hook.cancel_job(JOB_ID)
    assert raised.value.job == job("completed")
    assert raised.value.request_id == "rid-7"


def test_refused_cancel_of_a_running_job_is_an_error(hook, requests_mock):
    requests_mock.delete(JOB_URL, status_code=400, json={"errorCode": "90000", "message": "busy"})
    requests_mock.get(JOB_URL, json=job("executing"))
    with pytest.raises(AquaApiError, match="busy"):
        hook.cancel_job(JOB_ID)


def test_cancel_accepted_without_a_body(hook, requests_mock):
    requests_mock.delete(JOB_URL, status_code=204)
    requests_mock.get(JOB_URL, json=job("cancelled"))
    assert hook.cancel_job(JOB_ID) == job("cancelled")


def test_cancel_accepted_on_an_already_completed_job(hook, requests_mock):
    requests_mock.delete(JOB_URL, json=job("completed"))
    with pytest.raises(AquaJobAlreadyFinishedError):
        hook.cancel_job(JOB_ID)


@pytest.mark.parametrize(
    ("status_code", "body"),
    [
        (404, None),
        (400, {"message": "Job not found"}),
        (200, {"errorCode": "90002", "message": "Invalid Job Id."}),
        (400, {"message": "Invalid Job Id."}),
    ],
)
def test_unknown_job(hook, requests_mock, status_code, body):
    requests_mock.delete(JOB_URL, status_code=status_code, json=body)
    requests_mock.get(JOB_URL, status_code=status_code, json=body)
    with pytest.raises(AquaJobNotFoundError):
        hook.cancel_job(JOB_ID)
    with pytest.raises(AquaJobNotFoundError):
        hook.get_job(JOB_ID)


def test_retry_after_as_an_http_date(hook, requests_mock):
    requests_mock.get(
        JOB_URL,
        [
            {"status_code": 429, "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}},
            {"json": job("executing")},
        ],
    )
    assert hook.get_job(JOB_ID)["status"] == "executing"
    assert requests_mock.call_count == 3  # token, 429, 200


def test_every_call_sends_the_bearer_token(hook, requests_mock):
    requests_mock.get(JOB_URL, json=job("executing"))
    hook.get_job(JOB_ID)
    assert requests_mock.last_request.headers["Authorization"] == "Bearer tok-123456"
    assert requests_mock.last_request.headers["Accept-Encoding"] == "gzip"


def test_refusal_of_a_resent_cancel_that_got_through_is_success(hook, requests_mock):
    # The first DELETE was processed but its answer lost (500); the resent one is refused.
    requests_mock.delete(JOB_URL, [{"status_code": 500}, {"status_code": 409, "json": {"message": "not running"}}])
    requests_mock.get(JOB_URL, json=job("cancelled"))
    assert hook.cancel_job(JOB_ID) == job("cancelled")


def test_refusal_of_a_first_cancel_of_a_cancelled_job_is_already_finished(hook, requests_mock):
    requests_mock.delete(JOB_URL, status_code=409, json={"message": "not running"})
    requests_mock.get(JOB_URL, json=job("cancelled"))
    with pytest.raises(AquaJobAlreadyFinishedError):
        hook.cancel_job(JOB_ID)


def test_statuses_compare_case_insensitively(hook, requests_mock):
    from airflow_provider_zuora_aqua.jobs.status import job_failure_reason

    requests_mock.delete(JOB_URL, json=job("Cancelled"))
    assert hook.cancel_job(JOB_ID)["status"] == "Cancelled"
    assert job_failure_reason({"id": JOB_ID, "status": "Completed", "batches": [{"status": "COMPLETED"}]}) is None
    assert "Invalid" in job_failure_reason(
        {"id": JOB_ID, "status": "Completed", "batches": [{"name": "b", "status": "Error", "message": "Invalid"}]}
    )
