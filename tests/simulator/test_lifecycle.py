"""Job lifecycle, cancel, forced outcomes, lookups and the last stateful job."""

from __future__ import annotations

import re
import time

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import ACCOUNT_QUERY, HEX32, INVOICE_QUERY, TIMESTAMP, Client, SimFactory, job_body

INVALID_JOB_ID = {"errorCode": "90002", "message": "Invalid Job Id."}
INVALID_CANCEL = {"errorCode": "90003", "message": "Invalid Job Id for job cancellation."}


def test_submitted_then_executing_then_completed(sim: AquaSimulator, client: Client) -> None:
    job_id = client.submit_job()["id"]
    seen = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        job = client.get_job(job_id).json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
            if job["status"] == "submitted":
                assert "startTime" not in job and job["batches"][0]["status"] == "pending"
            if job["status"] == "executing":
                assert re.fullmatch(TIMESTAMP, job["startTime"]) and "endTime" not in job
        if job["status"] == "completed":
            break
        time.sleep(0.02)
    assert seen == ["submitted", "executing", "completed"]
    assert re.fullmatch(TIMESTAMP, job["endTime"]) and job["startTime"] <= job["endTime"]
    [batch] = job["batches"]
    assert batch["status"] == "completed" and batch["message"] == ""
    assert re.fullmatch(HEX32, batch["fileId"])
    assert isinstance(batch["recordCount"], int) and 1 <= batch["recordCount"] <= 1000
    assert job == sim.get_job(job_id)


def test_record_count_is_deterministic(make_sim: SimFactory) -> None:
    first, second = make_sim(job_seconds=0), make_sim(job_seconds=0)
    counts = []
    for sim in (first, second):
        client = Client(sim.base_url)
        job = client.wait_for(client.submit_job()["id"], "completed")
        counts.append(job["batches"][0]["recordCount"])
    assert counts[0] == counts[1]


def test_zero_job_seconds_completes_at_once(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0)
    client = Client(sim.base_url)
    submitted = client.submit_job()
    assert submitted["status"] == "submitted"  # Zuora always answers the submit with "submitted"
    job = client.get_job(submitted["id"]).json()
    assert job["status"] == "completed" and job["startTime"] == job["endTime"]


def test_batches_run_one_after_another(client: Client) -> None:
    job_id = client.submit_job(job_body(ACCOUNT_QUERY, INVOICE_QUERY))["id"]
    deadline = time.monotonic() + 3
    while True:
        job = client.get_job(job_id).json()
        if job["batches"][0]["status"] == "completed":
            break
        assert job["batches"][1]["status"] == "pending"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert job["status"] == "executing"
    assert job["batches"][1]["status"] in ("executing", "completed")
    assert client.file(job["batches"][0]["fileId"]).status_code == 200
    done = client.wait_for(job_id, "completed")
    assert [batch["status"] for batch in done["batches"]] == ["completed", "completed"]


def test_cancel_running_job(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    job_id = client.submit_job(job_body(ACCOUNT_QUERY, INVOICE_QUERY))["id"]
    response = client.delete_job(job_id)
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["id"] == job_id
    assert re.fullmatch(TIMESTAMP, cancelled["endTime"])
    for batch in cancelled["batches"]:
        assert batch["status"] == "cancelled" and batch["recordCount"] == 0 and "fileId" not in batch
    assert client.get_job(job_id).json() == cancelled
    assert client.delete_job(job_id).json() == INVALID_CANCEL


def test_cancel_keeps_batches_already_completed(client: Client) -> None:
    job_id = client.submit_job(job_body(ACCOUNT_QUERY, INVOICE_QUERY))["id"]
    deadline = time.monotonic() + 3
    while client.get_job(job_id).json()["batches"][0]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cancelled = client.delete_job(job_id).json()
    first, second = cancelled["batches"]
    assert cancelled["status"] == "cancelled"
    assert first["status"] == "completed" and first["recordCount"] > 0
    assert second["status"] == "cancelled" and "fileId" not in second
    assert client.file(first["fileId"]).status_code == 200


@pytest.mark.parametrize(("errors_as_200", "status"), [(False, 400), (True, 200)])
def test_cancel_refused_for_finished_and_unknown_jobs(make_sim: SimFactory, errors_as_200: bool, status: int) -> None:
    sim = make_sim(job_seconds=0, errors_as_200=errors_as_200)
    client = Client(sim.base_url)
    job_id = client.submit_job()["id"]
    client.wait_for(job_id, "completed")
    for target in (job_id, "0" * 32):
        response = client.delete_job(target)
        assert (response.status_code, response.json()) == (status, INVALID_CANCEL)
    assert client.get_job(job_id).json()["status"] == "completed"


@pytest.mark.parametrize("final", ["error", "aborted", "cancelled"])
def test_cancel_refused_after_forced_terminal_status(make_sim: SimFactory, final: str) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    job_id = client.submit_job()["id"]
    sim.finish_job(job_id, final)
    assert (client.delete_job(job_id).status_code, client.get_job(job_id).json()["status"]) == (400, final)


@pytest.mark.parametrize(("errors_as_200", "status"), [(False, 404), (True, 200)])
def test_get_unknown_job(make_sim: SimFactory, errors_as_200: bool, status: int) -> None:
    client = Client(make_sim(errors_as_200=errors_as_200).base_url)
    response = client.get_job("f" * 32)
    assert (response.status_code, response.json()) == (status, INVALID_JOB_ID)
    assert client.get_job("f" * 32 + "/").status_code == status


def test_finish_job_error(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    job_id = client.submit_job(job_body(ACCOUNT_QUERY, INVOICE_QUERY))["id"]
    assert sim.finish_job(job_id, "error", "query timed out") is None
    job = client.get_job(job_id).json()
    assert job["status"] == "error" and "endTime" in job
    for batch in job["batches"]:
        assert (batch["status"], batch["message"], batch["recordCount"]) == ("error", "query timed out", 0)
        assert "fileId" not in batch


def test_finish_job_completed_gives_files(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    job_id = client.submit_job()["id"]
    sim.finish_job(job_id, "completed")
    job = client.get_job(job_id).json()
    assert job["status"] == "completed" and job["startTime"] and job["endTime"]
    [batch] = job["batches"]
    assert batch["status"] == "completed" and batch["recordCount"] > 0
    assert client.file(batch["fileId"]).status_code == 200


def test_finish_job_overrides_a_job_that_completed(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0)
    client = Client(sim.base_url)
    job_id = client.submit_job()["id"]
    file_id = client.wait_for(job_id, "completed")["batches"][0]["fileId"]
    sim.finish_job(job_id, "aborted", "killed")
    assert sim.get_job(job_id)["status"] == "aborted"
    assert client.file(file_id).status_code == 404


def test_finish_job_and_get_job_validate(sim: AquaSimulator, client: Client) -> None:
    job_id = client.submit_job()["id"]
    with pytest.raises(ValueError, match="status"):
        sim.finish_job(job_id, "done")
    with pytest.raises(KeyError):
        sim.finish_job("0" * 32, "completed")
    with pytest.raises(KeyError):
        sim.get_job("0" * 32)


@pytest.mark.parametrize(("errors_as_200", "status"), [(False, 404), (True, 200)])
def test_last_completed_stateful_job(make_sim: SimFactory, errors_as_200: bool, status: int) -> None:
    sim = make_sim(job_seconds=30, errors_as_200=errors_as_200)
    client = Client(sim.base_url)
    path = "/v1/batch-query/jobs/partner/acme/project/p1"
    body = job_body(version="1.1", partner="acme", project="p1")
    first = client.submit_job(body)
    assert first["batches"][0]["full"] is True
    missing = client.request("GET", path)
    assert (missing.status_code, missing.json()) == (status, INVALID_JOB_ID)
    sim.finish_job(first["id"], "completed")
    client.submit_job(job_body())  # stateless jobs do not count
    other = client.submit_job(job_body(version="1.1", partner="acme", project="p2"))
    sim.finish_job(other["id"], "completed")
    last = client.request("GET", path + "/")
    assert last.status_code == 200 and last.json()["id"] == first["id"]
    assert sim.requests_for("stateful_last_job")[-1].status == 200
    # With a completed load behind it, the next job of the pair is incremental.
    assert client.submit_job(body)["batches"][0]["full"] is False


def test_concurrent_job_limit(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30, concurrent_job_limit=2)
    client = Client(sim.base_url)
    first = client.submit_job()["id"]
    client.submit_job()
    refusal = client.submit().json()
    assert refusal["errorCode"] == "90028" and "id" not in refusal
    client.submit_job(job_body(version="1.1", partner="a", project="b"))  # separate stateful limit
    client.delete_job(first)
    client.submit_job()


def test_the_job_limit_as_a_429_is_not_saved_under_the_key_and_an_error_body_is(make_sim: SimFactory) -> None:
    limited = make_sim(job_seconds=30, concurrent_job_limit=1, job_limit_answer="429")
    client = Client(limited.base_url)
    running = client.submit_job()["id"]
    refused = client.submit(headers={"Idempotency-Key": "k1"})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["errorCode"] == "90028"
    client.delete_job(running)
    assert client.submit(headers={"Idempotency-Key": "k1"}).json()["id"]  # the key was not spent on the refusal

    body_limited = make_sim(job_seconds=30, concurrent_job_limit=1)
    client = Client(body_limited.base_url)
    running = client.submit_job()["id"]
    assert client.submit(headers={"Idempotency-Key": "k2"}).json()["errorCode"] == "90028"
    client.delete_job(running)
    assert client.submit(headers={"Idempotency-Key": "k2"}).json()["errorCode"] == "90028"  # replayed, as Zuora may


def test_an_unknown_job_limit_answer_is_refused(make_sim: SimFactory) -> None:
    with pytest.raises(ValueError, match="job_limit_answer"):
        make_sim(job_limit_answer="503")
