"""Idempotent submits: ``Idempotency-Key`` replays, 409 while in flight, 422 on another body, expiry."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.sim_client import INVOICE_QUERY, TIMEOUT, Client, SimFactory, job_body


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


def test_same_key_and_body_replays_the_saved_answer(sim: AquaSimulator, client: Client) -> None:
    first = client.submit(headers=keyed("key-1"))
    again = client.submit(headers=keyed("key-1", **{"Zuora-Track-Id": "second"}))
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.json()["id"] == first.json()["id"]
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    # Per-request headers are fresh on a replay.
    assert again.headers["Zuora-Request-Id"] != first.headers["Zuora-Request-Id"]
    assert again.headers["Zuora-Track-Id"] == "second"
    assert sim.job_ids() == [first.json()["id"]]
    # Another key is another job; no key is a new job every time, as before.
    other = client.submit(headers=keyed("key-2")).json()["id"]
    assert client.submit().json()["id"] != client.submit().json()["id"]
    assert len(sim.job_ids()) == 4 and other in sim.job_ids()


def test_bodies_are_compared_as_json(sim: AquaSimulator, client: Client) -> None:
    body = job_body()
    first = client.submit(body, headers=keyed("k")).json()
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    again = client.request(
        "POST", "/v1/batch-query/", data=reordered, headers=keyed("k", **{"Content-Type": "application/json"})
    )
    assert again.json()["id"] == first["id"]
    assert len(sim.job_ids()) == 1


def test_error_answers_are_saved_too(sim: AquaSimulator, client: Client) -> None:
    refused = client.submit(job_body("select from"), headers=keyed("bad-query"))
    assert refused.status_code == 200 and refused.json()["errorCode"] == "90005"
    assert client.submit(job_body("select from"), headers=keyed("bad-query")).json() == refused.json()
    malformed = client.request("POST", "/v1/batch-query/", data=b"{oops", headers=keyed("bad-json"))
    assert malformed.status_code == 400
    replay = client.request("POST", "/v1/batch-query/", data=b"{oops", headers=keyed("bad-json"))
    assert (replay.status_code, replay.content) == (400, malformed.content)
    assert sim.job_ids() == []


def test_different_body_with_the_same_key_is_422(sim: AquaSimulator, client: Client) -> None:
    first = client.submit(headers=keyed("reused")).json()
    refused = client.submit(job_body(INVOICE_QUERY), headers=keyed("reused"))
    assert refused.status_code == 422
    error = refused.json()
    assert error["success"] is False and "different request" in error["reasons"][0]["message"]
    assert sim.job_ids() == [first["id"]]


def test_same_key_while_the_first_is_in_flight_is_409(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("submit", "slow", delay=1.5, count=1)
    answers: list[requests.Response] = []
    first = threading.Thread(target=lambda: answers.append(client.submit(headers=keyed("busy"))))
    first.start()
    try:
        deadline = time.monotonic() + 5
        while not sim.job_ids():  # the job exists while its answer is held back
            assert time.monotonic() < deadline, "the slow submit never created its job"
            time.sleep(0.01)
        conflict = Client(sim.base_url).submit(headers=keyed("busy"))
        assert conflict.status_code == 409
        assert "in progress" in conflict.json()["reasons"][0]["message"]
    finally:
        first.join(TIMEOUT)
    [answer] = answers
    assert answer.status_code == 200
    assert answer.json()["id"] == sim.job_ids()[0]
    assert client.submit(headers=keyed("busy")).json()["id"] == answer.json()["id"]
    assert len(sim.job_ids()) == 1
    assert [r.fault for r in sim.requests_for("submit")] == ["slow", None, None]


def test_keys_expire_after_idempotency_seconds(make_sim: SimFactory) -> None:
    sim = make_sim(idempotency_seconds=0.3)
    client = Client(sim.base_url)
    first = client.submit(headers=keyed("short-lived")).json()["id"]
    deadline = time.monotonic() + 10
    while (again := client.submit(headers=keyed("short-lived")).json()["id"]) == first:
        assert time.monotonic() < deadline, "the key was never forgotten"
        time.sleep(0.05)
    assert sim.job_ids() == [first, again]
    # The key now stands for the new job.
    assert client.submit(headers=keyed("short-lived")).json()["id"] == again


def test_a_lost_answer_is_recovered_by_resending_with_the_key(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("submit", "lost_answer", count=1)
    with pytest.raises(requests.ConnectionError):
        client.submit(headers=keyed("lost"))
    [job_id] = sim.job_ids()  # the job was created, its answer never came
    resent = client.submit(headers=keyed("lost"))
    assert resent.status_code == 200 and resent.json()["id"] == job_id
    assert sim.job_ids() == [job_id]


@pytest.mark.parametrize("kind", ["drop", "503", "429"])
def test_answers_that_never_reached_the_api_are_not_saved(sim: AquaSimulator, client: Client, kind: str) -> None:
    sim.add_fault("submit", kind, count=1)
    try:
        assert client.submit(headers=keyed("gateway")).status_code != 200
    except requests.ConnectionError:
        assert kind == "drop"
    assert sim.job_ids() == []
    assert client.submit(headers=keyed("gateway")).status_code == 200
    assert len(sim.job_ids()) == 1


def test_unauthorized_requests_do_not_use_the_key(sim: AquaSimulator, client: Client) -> None:
    anonymous = requests.post(
        f"{sim.base_url}/v1/batch-query/", json=job_body(), headers=keyed("auth"), timeout=TIMEOUT
    )
    assert anonymous.status_code == 401
    assert client.submit(headers=keyed("auth")).status_code == 200


def test_key_length_is_checked(sim: AquaSimulator, client: Client) -> None:
    assert client.submit(headers=keyed("k" * 255)).status_code == 200
    too_long = client.submit(headers=keyed("k" * 256))
    assert too_long.status_code == 400
    assert "255" in too_long.json()["reasons"][0]["message"]
    assert client.submit(headers=keyed("")).status_code == 400
    assert len(sim.job_ids()) == 1
