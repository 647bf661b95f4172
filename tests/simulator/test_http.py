"""HTTP behaviour: headers, compression, routing, keep-alive, the request log, stop."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator, RecordedRequest
from tests.support.sim_client import ACCOUNT_QUERY, CLIENT_ID, CLIENT_SECRET, TIMEOUT, Client, job_body, token_form

BIG_JOB = job_body(*[ACCOUNT_QUERY] * 10)  # its JSON answer is well over 1000 bytes


def connection(sim: AquaSimulator) -> http.client.HTTPConnection:
    url = urlsplit(sim.base_url)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)


def test_every_answer_has_a_request_id_and_echoes_the_track_id(sim: AquaSimulator, client: Client) -> None:
    headers = {"Zuora-Track-Id": "track-123"}
    responses = [
        client.submit(headers=headers),
        client.get_job("0" * 32, headers=headers),
        requests.get(f"{sim.base_url}/v1/batch-query/jobs/x", headers=headers, timeout=TIMEOUT),  # 401
        requests.get(f"{sim.base_url}/nowhere", headers=headers, timeout=TIMEOUT),  # 404
    ]
    request_ids = set()
    for response in responses:
        request_ids.add(uuid.UUID(response.headers["Zuora-Request-Id"]))
        assert response.headers["Zuora-Track-Id"] == "track-123"
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert len(request_ids) == len(responses)
    assert "Zuora-Track-Id" not in client.get_job("0" * 32).headers


def test_large_json_is_gzipped_when_accepted(client: Client) -> None:
    job_id = client.submit_job(BIG_JOB)["id"]
    gzipped = client.get_job(job_id, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = gzipped.raw.read(decode_content=False)
    assert gzipped.headers["Content-Encoding"] == "gzip"
    assert int(gzipped.headers["Content-Length"]) == len(raw)
    document = json.loads(gzip.decompress(raw))
    assert len(json.dumps(document)) > 1000 and document["id"] == job_id
    plain = client.get_job(job_id, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.json()["id"] == job_id
    refused = client.get_job(job_id, headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers


def test_small_json_is_not_gzipped(client: Client) -> None:
    response = client.get_job("0" * 32, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in response.headers and response.status_code == 404


def test_unknown_paths_and_methods(sim: AquaSimulator, client: Client) -> None:
    missing = client.request("GET", "/v1/batch-query/jobs")
    assert missing.status_code == 404 and missing.json()["success"] is False
    wrong_method = client.request("PUT", "/v1/batch-query/")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    assert client.request("GET", "/oauth/token").status_code == 405
    assert [r.route for r in sim.requests[-3:]] == ["unknown"] * 3


def test_keep_alive_reuses_one_connection(sim: AquaSimulator) -> None:
    conn = connection(sim)
    try:
        for _ in range(3):
            conn.request("POST", "/oauth/token", body="grant_type=client_credentials&client_id=x&client_secret=y")
            first_socket = conn.sock
            response = conn.getresponse()
            assert response.status == 401 and response.getheader("Content-Length")
            response.read()
            assert response.getheader("Connection") != "close"
            conn.request("GET", "/nowhere")
            response = conn.getresponse()
            response.read()
            assert conn.sock is first_socket
    finally:
        conn.close()


def test_chunked_request_body(sim: AquaSimulator, client: Client) -> None:
    def chunks() -> Iterator[bytes]:
        payload = json.dumps(job_body()).encode()
        yield payload[:10]
        yield payload[10:]

    response = client.request("POST", "/v1/batch-query/", data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["status"] == "submitted"
    assert sim.requests_for("submit")[-1].json == job_body()


def test_request_log_keeps_no_secrets(sim: AquaSimulator) -> None:
    client = Client(sim.base_url)
    requests.post(
        f"{sim.base_url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET)
    )
    client.submit(headers={"Cookie": "session=abc", "Proxy-Authorization": "Basic eHl6"})
    log = sim.requests
    assert [r.route for r in log] == ["token", "token", "submit"]
    for entry in log:
        assert isinstance(entry, RecordedRequest)
        assert not {"authorization", "cookie", "proxy-authorization"} & {h.lower() for h in entry.headers}
    dumped = repr(log)
    for secret in (CLIENT_SECRET, client.token, "session=abc"):
        assert secret not in dumped
    assert log[0].json is None and log[2].json == job_body()
    assert log[2].headers["Content-Type"] == "application/json"


def test_request_log_fields_order_and_filters(sim: AquaSimulator, client: Client) -> None:
    before = time.time()
    job_id = client.submit_job()["id"]
    client.request("GET", f"/v1/batch-query/jobs/{job_id}?verbose=1")
    client.delete_job(job_id)
    log = sim.requests
    assert [(r.method, r.route, r.status) for r in log] == [
        ("POST", "token", 200),
        ("POST", "submit", 200),
        ("GET", "get_job", 200),
        ("DELETE", "delete_job", 200),
    ]
    get = log[2]
    assert get.path == f"/v1/batch-query/jobs/{job_id}" and get.query == "verbose=1" and get.fault is None
    assert log[0].time <= before <= log[1].time <= log[-1].time <= time.time()
    assert sim.requests_for("get_job") == [get]
    assert sim.requests_for("get_job", "delete") == []
    assert sim.requests_for("delete_job", "DELETE") == [log[3]]
    log.clear()  # a copy: the simulator's log is untouched
    assert len(sim.requests) == 4
    with pytest.raises(AttributeError):
        get.status = 500  # frozen
    sim.clear_requests()
    assert sim.requests == []


def test_log_keeps_arrival_order_when_answers_finish_out_of_order(sim: AquaSimulator, client: Client) -> None:
    sim.add_fault("get_job", "slow", delay=0.4, count=1)
    slow = threading.Thread(target=client.get_job, args=("a" * 32,))
    slow.start()
    time.sleep(0.1)
    Client(sim.base_url)  # a token request, answered while the slow one waits
    slow.join()
    assert [r.route for r in sim.requests][-2:] == ["get_job", "token"]


def test_many_concurrent_clients(sim: AquaSimulator, client: Client) -> None:
    job_id = client.submit_job()["id"]
    statuses: list[int] = []
    lock = threading.Lock()

    def poll() -> None:
        with requests.Session() as session:
            for _ in range(3):
                code = session.get(
                    f"{sim.base_url}/v1/batch-query/jobs/{job_id}",
                    headers={"Authorization": f"Bearer {client.token}"},
                    timeout=TIMEOUT,
                ).status_code
                with lock:
                    statuses.append(code)

    threads = [threading.Thread(target=poll) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 300
    assert len(sim.requests_for("get_job")) == 300


def test_stop_closes_listener_and_idle_connections() -> None:
    sim = AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).start()
    host, port = urlsplit(sim.base_url).hostname, urlsplit(sim.base_url).port
    idle = connection(sim)
    idle.request("POST", "/oauth/token", body="&".join(f"{k}={v}" for k, v in token_form().items()))
    idle.getresponse().read()
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1)
    with pytest.raises((http.client.HTTPException, OSError)):
        idle.request("GET", "/nowhere")
        idle.getresponse()
    idle.close()
    sim.stop()  # idempotent


def test_lifecycle_errors() -> None:
    sim = AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    with sim:
        assert sim.base_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            sim.start()
    with pytest.raises(ValueError):
        AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=-1)
