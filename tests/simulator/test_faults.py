"""Injected faults: 403, 404, 429, 5xx, drop, slow, drop_mid, lost_answer; by count, rate or always; specs."""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.simulator.faults import parse_fault_spec
from tests.support.sim_client import TIMEOUT, Client, SimFactory, job_body

UNKNOWN_JOB = "0" * 32


def test_429_with_retry_after_for_count_requests(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("get_job", "429", count=2, retry_after=3)
    responses = [client.get_job(UNKNOWN_JOB) for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 404]
    assert responses[0].headers["Retry-After"] == "3"
    assert responses[0].json()["success"] is False
    assert responses[0].headers["Zuora-Request-Id"]
    assert [(r.status, r.fault) for r in sim.requests_for("get_job")] == [(429, "429"), (429, "429"), (404, None)]


def test_429_retry_after_defaults_to_one_second(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("submit", 429, count=1)
    assert client.submit().headers["Retry-After"] == "1"
    assert client.submit().status_code == 200


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx(sim: AquaSimulator, client: Client, status: int) -> None:
    sim.add_fault("delete_job", str(status), count=1)
    first = client.delete_job(UNKNOWN_JOB)
    assert first.status_code == status and first.json()["success"] is False
    assert "Retry-After" not in first.headers
    assert client.delete_job(UNKNOWN_JOB).status_code == 400


def test_faults_apply_before_authentication(sim: AquaSimulator) -> None:
    sim.add_fault("get_job", 503)
    for _ in range(2):  # no count, no rate: every request
        response = requests.get(f"{sim.base_url}/v1/batch-query/jobs/{UNKNOWN_JOB}", timeout=TIMEOUT)
        assert response.status_code == 503
    sim.clear_faults()
    assert requests.get(f"{sim.base_url}/v1/batch-query/jobs/{UNKNOWN_JOB}", timeout=TIMEOUT).status_code == 401


def test_drop_closes_the_connection_without_an_answer(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("submit", "drop", count=1)
    with pytest.raises(requests.ConnectionError):
        client.submit()
    assert client.submit().status_code == 200
    dropped, answered = sim.requests_for("submit")
    assert (dropped.status, dropped.fault, dropped.json) == (None, "drop", job_body())
    assert (answered.status, answered.fault) == (200, None)


def test_slow_answers_normally_after_the_delay(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("get_job", "slow", delay=0.3, count=1)
    started = time.monotonic()
    assert client.get_job(UNKNOWN_JOB).status_code == 404
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    client.get_job(UNKNOWN_JOB)
    assert time.monotonic() - started < 0.3
    assert [r.fault for r in sim.requests_for("get_job")] == ["slow", None]


def test_wildcard_route(sim: AquaSimulator) -> None:
    sim.add_fault("*", 500, count=2)
    assert requests.get(f"{sim.base_url}/nowhere", timeout=TIMEOUT).status_code == 500
    assert requests.post(f"{sim.base_url}/oauth/token", timeout=TIMEOUT).status_code == 500
    assert requests.get(f"{sim.base_url}/nowhere", timeout=TIMEOUT).status_code == 404
    assert [r.route for r in sim.requests] == ["unknown", "token", "unknown"]


def hit_pattern(sim: AquaSimulator, requests_count: int) -> list[bool]:
    client = Client(sim.base_url)
    sim.add_fault("get_job", 503, rate=0.5)
    return [client.get_job(UNKNOWN_JOB).status_code == 503 for _ in range(requests_count)]


def test_rate_is_random_but_seeded(make_sim: SimFactory) -> None:
    first = hit_pattern(make_sim(seed=7), 40)
    assert 5 < sum(first) < 35
    assert hit_pattern(make_sim(seed=7), 40) == first
    assert hit_pattern(make_sim(seed=8), 40) != first


def test_rate_and_count_together(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("get_job", 503, rate=1.0, count=2)
    assert [client.get_job(UNKNOWN_JOB).status_code for _ in range(3)] == [503, 503, 404]


def test_earlier_rules_win(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("get_job", 502, count=1)
    sim.add_fault("*", 500, count=1)
    assert [client.get_job(UNKNOWN_JOB).status_code for _ in range(3)] == [502, 500, 404]


@pytest.mark.parametrize(
    ("route", "kind", "settings"),
    [
        ("nowhere", "429", {}),
        ("get_job", "418", {}),
        ("get_job", "teapot", {}),
        ("get_job", "429", {"count": 0}),
        ("get_job", "429", {"rate": 1.5}),
        ("get_job", "slow", {"delay": -1}),
    ],
)
def test_invalid_faults_are_refused(sim: AquaSimulator, route: str, kind: str, settings: dict) -> None:
    with pytest.raises(ValueError):
        sim.add_fault(route, kind, **settings)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "delete_job:429:count=2:retry_after=1",
            {"route": "delete_job", "kind": "429", "count": 2, "retry_after": 1.0},
        ),
        ("get_job:503:rate=0.3", {"route": "get_job", "kind": "503", "rate": 0.3}),
        ("*:drop:count=1", {"route": "*", "kind": "drop", "count": 1}),
        ("submit:slow:delay=2:count=1", {"route": "submit", "kind": "slow", "delay": 2.0, "count": 1}),
    ],
)
def test_fault_spec_grammar(spec: str, expected: dict) -> None:
    assert parse_fault_spec(spec) == expected


@pytest.mark.parametrize("spec", ["get_job", "get_job:429:count", "get_job:429:tries=2", "get_job:429:rate=x", "x:429"])
def test_bad_fault_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault_spec(spec)


def completed_file(sim: AquaSimulator, client: Client) -> str:
    job_id = client.submit_job()["id"]
    sim.finish_job(job_id, "completed")
    return sim.get_job(job_id)["batches"][0]["fileId"]


def test_drop_mid_sends_half_the_body_then_closes(make_sim: SimFactory) -> None:
    sim = make_sim(file_rows=200)
    client = Client(sim.base_url)
    file_id = completed_file(sim, client)
    whole = client.file(file_id).content
    sim.add_fault("file", "drop_mid", count=1)
    url = urlsplit(sim.base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    connection.request("GET", f"/v1/files/{file_id}", headers={"Authorization": f"Bearer {client.token}"})
    response = connection.getresponse()
    assert response.status == 200
    assert int(response.headers["Content-Length"]) == len(whole)  # the full length is announced
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert cut.value.partial == whole[: len(whole) // 2]
    connection.close()
    # requests sees a broken download, the next one is whole again.
    sim.add_fault("file", "drop_mid", count=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.file(file_id)
    assert client.file(file_id).content == whole
    assert [(r.status, r.fault) for r in sim.requests_for("file")] == [
        (200, None), (200, "drop_mid"), (200, "drop_mid"), (200, None),
    ]  # fmt: skip


def test_drop_mid_on_a_json_answer(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("get_job", "drop_mid", count=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.get_job(UNKNOWN_JOB)
    assert client.get_job(UNKNOWN_JOB).status_code == 404


def test_lost_answer_processes_the_request_but_never_answers(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    sim.add_fault("submit", "lost_answer", count=1)
    with pytest.raises(requests.ConnectionError):
        client.submit()
    [job_id] = sim.job_ids()  # created all the same
    assert sim.get_job(job_id)["status"] in ("submitted", "executing")
    sim.add_fault("delete_job", "lost_answer", count=1)
    with pytest.raises(requests.ConnectionError):
        client.delete_job(job_id)
    assert sim.get_job(job_id)["status"] == "cancelled"  # the cancel happened, its answer was lost
    assert [(r.route, r.status, r.fault) for r in sim.requests[1:]] == [
        ("submit", None, "lost_answer"),
        ("delete_job", None, "lost_answer"),
    ]


@pytest.mark.parametrize(("status", "code"), [(403, 50000010), (404, 50000040)])
def test_403_and_404_faults(sim: AquaSimulator, client: Client, status: int, code: int) -> None:
    file_id = completed_file(sim, client)
    sim.add_fault("file", status, count=1)
    faulted = client.file(file_id)
    assert faulted.status_code == status
    assert faulted.json()["reasons"][0]["code"] == code
    assert "max-object-size" not in faulted.text  # a permission problem, not the size cap
    assert client.file(file_id).status_code == 200


def test_slow_submit_creates_the_job_before_the_answer(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("submit", "slow", delay=0.5, count=1)
    answers: list[requests.Response] = []
    sender = threading.Thread(target=lambda: answers.append(client.submit()))
    sender.start()
    deadline = time.monotonic() + 5
    while not sim.job_ids():
        assert time.monotonic() < deadline, "the job was not created before the answer"
        time.sleep(0.01)
    sender.join(TIMEOUT)
    assert answers[0].json()["id"] == sim.job_ids()[0]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("file:drop_mid:count=1", {"route": "file", "kind": "drop_mid", "count": 1}),
        ("submit:lost_answer", {"route": "submit", "kind": "lost_answer"}),
        ("file:403:rate=0.5", {"route": "file", "kind": "403", "rate": 0.5}),
        ("get_job:404", {"route": "get_job", "kind": "404"}),
    ],
)
def test_new_fault_kinds_in_specs(spec: str, expected: dict) -> None:
    assert parse_fault_spec(spec) == expected
