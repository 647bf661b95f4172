"""The /_simulator/ control surface used when the simulator runs as a separate process."""

from __future__ import annotations

import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import TIMEOUT, Client, SimFactory


def control(sim: AquaSimulator, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, f"{sim.base_url}/_simulator/{path}", timeout=TIMEOUT, **kwargs)


def test_requests_listing_and_clearing(sim: AquaSimulator, client: Client) -> None:
    client.get_job("0" * 32)
    listing = control(sim, "GET", "requests").json()
    assert [entry["route"] for entry in listing] == ["token", "get_job"]
    assert set(listing[1]) == {"time", "method", "path", "query", "route", "headers", "status", "fault", "json"}
    assert control(sim, "DELETE", "requests").status_code == 200
    assert control(sim, "GET", "requests/").json() == []
    assert sim.requests == []  # control calls are not logged


def test_faults_over_http(sim: AquaSimulator, client: Client) -> None:
    added = control(sim, "POST", "faults", json={"route": "get_job", "kind": 503, "count": 1})
    assert added.status_code == 200
    assert client.get_job("0" * 32).status_code == 503
    control(sim, "POST", "faults", json={"route": "get_job", "kind": "429", "retry_after": 2})
    assert client.get_job("0" * 32).headers["Retry-After"] == "2"
    assert control(sim, "DELETE", "faults").status_code == 200
    assert client.get_job("0" * 32).status_code == 404
    for bad in ({"route": "get_job"}, {"route": "get_job", "kind": "418"}, {"route": "x", "kind": "500", "n": 1}, []):
        response = control(sim, "POST", "faults", json=bad)
        assert response.status_code == 400 and response.json()["error"]
    assert control(sim, "POST", "faults", data=b"{oops").status_code == 400


def test_finish_job_over_http(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    job_id = client.submit_job()["id"]
    finished = control(sim, "POST", f"jobs/{job_id}/finish", json={"status": "error", "message": "boom"})
    assert finished.status_code == 200 and finished.json()["status"] == "error"
    assert client.get_job(job_id).json()["batches"][0]["message"] == "boom"
    assert control(sim, "POST", f"jobs/{job_id}/finish", json={"status": "nope"}).status_code == 400
    assert control(sim, "POST", f"jobs/{'0' * 32}/finish", json={"status": "completed"}).status_code == 404


def test_tokens_over_http(sim: AquaSimulator, client: Client) -> None:
    assert control(sim, "GET", "tokens").json() == {"tokens_issued": 1}
    assert control(sim, "POST", "tokens/expire").json() == {"expired": 1}
    assert client.get_job("0" * 32).status_code == 401


def test_jobs_listing(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    assert control(sim, "GET", "jobs").json() == [] == sim.jobs()
    first = client.submit_job()["id"]
    second = client.submit_job()["id"]
    sim.finish_job(second, "completed")
    listing = control(sim, "GET", "jobs").json()
    assert [job["id"] for job in listing] == [first, second] == sim.job_ids()
    assert listing == sim.jobs()
    assert listing[1] == client.get_job(second).json() and listing[1]["status"] == "completed"


def test_files_purge_over_http(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0)
    client = Client(sim.base_url)
    jobs = [client.wait_for(client.submit_job()["id"], "completed") for _ in range(2)]
    file_ids = [job["batches"][0]["fileId"] for job in jobs]
    purged = control(sim, "POST", "files/purge", json={"job_id": jobs[0]["id"]})
    assert purged.json() == {"purged": 1}
    assert [client.file(file_id).status_code for file_id in file_ids] == [404, 200]
    assert control(sim, "POST", "files/purge").json() == {"purged": 2}
    assert client.file(file_ids[1]).status_code == 404
    assert control(sim, "POST", "files/purge", json={"job_id": "0" * 32}).status_code == 404
    for bad in ({"job_id": 5}, {"job": "x"}):
        assert control(sim, "POST", "files/purge", json=bad).status_code == 400


def test_unknown_control_endpoint(sim: AquaSimulator) -> None:
    assert control(sim, "GET", "nothing").status_code == 404
    assert control(sim, "PUT", "requests").status_code == 404
