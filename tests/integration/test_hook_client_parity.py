"""
The hook's two HTTP clients against the same faults: the sync client (``requests``: a job call
and a streamed result-file download) and the async client (``aiohttp``: a job call, as triggers
make it), each against a real server on 127.0.0.1 (:mod:`tests.support.hostile_server`).

Each fault must end every lane alike: the same error class, the same "may the request have
arrived" decision (``request_sent`` of a transport error; an HTTP answer always arrived), and
the same requests on the wire (token fetches and sends of the call, retries included).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.client.answers import HttpAnswer, parse_job_answer
from airflow_provider_zuora_aqua.client.async_client import AsyncAquaClient, shared_client_session
from airflow_provider_zuora_aqua.client.auth import TOKEN_CACHE
from airflow_provider_zuora_aqua.client.request import FILES_PATH
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings
from airflow_provider_zuora_aqua.client.sync_client import AquaClient
from airflow_provider_zuora_aqua.exceptions import (
    AquaAuthenticationError,
    AquaError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.results.destination import resolve_destination
from airflow_provider_zuora_aqua.results.receiver import FileReceiver
from airflow_provider_zuora_aqua.results.staging import StagedFile
from tests.support.hostile_server import JOB_ID, HostileServer, Reply, job_json, json_body

FILE_ID = "2c92c0f86a8dd422016a9e7a70116b0d"
JOB_PATH = f"/v1/batch-query/jobs/{JOB_ID}"
FILE_PATH = f"{FILES_PATH}/{FILE_ID}"
#: The connection's timeout, which bounds each exchange; one retry, no real backoff.
TIMEOUT = 1.0
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a lane ended, in the terms both clients must agree on."""

    error: type[AquaError]
    request_may_have_arrived: bool
    token_requests: int
    call_requests: int


@dataclass(frozen=True)
class Fault:
    name: str
    #: The reply of the job and file routes (None: nothing listens on the port).
    reply: Callable[[], Reply] | None
    expected: Outcome


FILE_BODY = b"Id,Name\n1,a\n" * 100
FAULTS = [
    Fault("connection refused", None, Outcome(AquaTransportError, False, 0, 0)),
    Fault(
        "reset mid-answer",
        # The job route sends part of a job JSON, the file route part of a file; then a RST.
        lambda: Reply(body=FILE_BODY, headers={"Content-Type": "text/csv"}, reset_after=40),
        Outcome(AquaTransportError, True, 1, 2),
    ),
    Fault(
        "401 twice",
        lambda: Reply(status=401, body=json_body({"message": "token expired"})),
        Outcome(AquaAuthenticationError, True, 2, 2),
    ),
    Fault(
        "429",
        lambda: Reply(status=429, body=json_body({"message": "slow down"}), headers={"Retry-After": "0"}),
        Outcome(AquaRateLimitError, True, 1, 2),
    ),
    Fault("503", lambda: Reply(status=503, body=b"busy"), Outcome(AquaServerError, True, 1, 2)),
    Fault(
        "slow answer",
        # Status line and headers one byte every 50 ms: each read is quick, the answer never complete.
        lambda: Reply(body=json_body(job_json()), drip_seconds=0.05, drip_everything=True),
        Outcome(AquaTransportError, True, 1, 2),
    ),
]


def settings(base_url: str) -> AquaConnectionSettings:
    return AquaConnectionSettings(
        conn_id="parity",
        base_url=base_url,
        client_id="parity-client",
        client_secret="parity-secret-9c1e",
        timeout=TIMEOUT,
        max_retries=1,
        retry_backoff=0.01,
    )


def read_job(answer: HttpAnswer) -> dict:
    return parse_job_answer(answer, what=f"GET {JOB_PATH}", job_id=JOB_ID)


def sync_call(base_url: str, tmp_path: Path) -> None:
    AquaClient(settings(base_url), log=LOG).call("GET", JOB_PATH, read=read_job)


def async_call(base_url: str, tmp_path: Path) -> None:
    async def call() -> None:
        async with shared_client_session() as session:
            await AsyncAquaClient(settings(base_url), session, log=LOG).call("GET", JOB_PATH, read=read_job)

    asyncio.run(call())


def sync_download(base_url: str, tmp_path: Path) -> None:
    with StagedFile(resolve_destination(tmp_path / "file.csv")) as staged:
        receiver = FileReceiver(FILE_ID, staged, "csv")
        AquaClient(settings(base_url), log=LOG).download(FILE_ID, receiver)


LANES = {
    "sync call": (sync_call, JOB_PATH),
    "async call": (async_call, JOB_PATH),
    "sync download": (sync_download, FILE_PATH),
}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port


def run_lane(lane: str, fault: Fault, tmp_path: Path, closed_port: int) -> tuple[Outcome, AquaError, float]:
    """One lane against a fresh server (and a fresh token cache) scripted with the fault."""
    drive, path = LANES[lane]
    TOKEN_CACHE.clear()
    with HostileServer() as server:
        if fault.reply is not None:
            server.on("GET", path, lambda _request: fault.reply())  # a fresh Reply per request
        base_url = server.base_url if fault.reply is not None else f"http://127.0.0.1:{closed_port}"
        started = time.monotonic()
        with pytest.raises(AquaError) as raised:
            drive(base_url, tmp_path / lane.replace(" ", "-"))
        elapsed = time.monotonic() - started
        error = raised.value
        outcome = Outcome(
            type(error),
            error.request_sent if isinstance(error, AquaTransportError) else True,
            len(server.requests_to("POST", "/oauth/token")),
            len(server.requests_to("GET", path)),
        )
    return outcome, error, elapsed


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_every_client_ends_a_fault_alike(fault: Fault, tmp_path: Path, closed_port: int) -> None:
    results = {lane: run_lane(lane, fault, tmp_path, closed_port) for lane in LANES}
    outcomes = {lane: outcome for lane, (outcome, _, _) in results.items()}
    assert outcomes == dict.fromkeys(LANES, fault.expected)
    for lane, (_, error, elapsed) in results.items():
        assert "parity-secret-9c1e" not in str(error)
        if fault.name == "slow answer":
            # Each of the two exchanges ends at its wall-clock bound, though bytes keep coming.
            assert "timed out waiting for the answer" in str(error), lane
            assert elapsed < 2 * TIMEOUT + 2.5, f"{lane} took {elapsed:.1f} s"
        if fault.name == "connection refused":
            assert "could not connect" in str(error) and str(closed_port) in str(error), lane
