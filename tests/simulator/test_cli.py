"""``python -m airflow_provider_zuora_aqua.simulator``: first stdout line, faults, signals."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest
import requests

from tests.support.sim_client import (
    CLIENT_ID,
    CLIENT_SECRET,
    MODULE,
    TIMEOUT,
    csv_records,
    first_line,
    job_body,
    stateful_body,
    token_form,
)

CREDENTIALS = ["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]


Serve = Callable[..., tuple[subprocess.Popen[str], str]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(
            [*MODULE, *CREDENTIALS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        processes.append(process)
        return process, first_line(process)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_prints_base_url_first_and_stops_on_signal(serve: Serve, signum: signal.Signals) -> None:
    process, base_url = serve(
        "--port", "0", "--fault", "token:503:count=1", "get_job:429:count=1", "--fault", "file:drop"
    )
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
    assert requests.post(f"{base_url}/oauth/token", data=token_form(), timeout=TIMEOUT).status_code == 503
    assert requests.post(f"{base_url}/oauth/token", data=token_form(), timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{base_url}/v1/batch-query/jobs/x", timeout=TIMEOUT).status_code == 429
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/v1/files/x", timeout=TIMEOUT)
    log = requests.get(f"{base_url}/_simulator/requests", timeout=TIMEOUT).json()
    assert [(entry["status"], entry["fault"]) for entry in log] == [
        (503, "503"),
        (200, None),
        (429, "429"),
        (None, "drop"),
    ]
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
    assert stdout == "" and stderr == ""  # nothing after the URL: quiet, no per-request logging


def test_help_documents_the_fault_grammar() -> None:
    result = subprocess.run([*MODULE, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0
    for text in (
        "--job-seconds",
        "--errors-as-200",
        "ROUTE:KIND",
        "retry_after",
        "submit:slow:delay=2:count=1",
        "drop_mid",
        "lost_answer",
        "--file-rows",
        "--segment-rows",
        "--max-file-bytes",
        "--file-purge-seconds",
        "--file-transport-gzip",
        "--idempotency-seconds",
    ):
        assert text in result.stdout


def test_bad_fault_spec_is_a_usage_error() -> None:
    result = subprocess.run(
        [*MODULE, *CREDENTIALS, "--fault", "get_job:418"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 2
    assert "418" in result.stderr and result.stdout == ""


def test_file_and_idempotency_options(serve: Serve) -> None:
    _, base_url = serve(
        *("--job-seconds", "0", "--file-rows", "250", "--segment-rows", "100", "--max-file-bytes", "5000"),
        *("--file-purge-seconds", "3600", "--file-transport-gzip", "--idempotency-seconds", "60"),
        "--no-sample-data",  # generated rows: Account has no table
    )
    session = requests.Session()
    token = session.post(f"{base_url}/oauth/token", data=token_form(), timeout=TIMEOUT).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"

    def submit(body: dict, key: str) -> dict:
        headers = {"Idempotency-Key": key}
        return session.post(f"{base_url}/v1/batch-query/", json=body, headers=headers, timeout=TIMEOUT).json()

    stateful = submit(stateful_body(), "k1")
    assert submit(stateful_body(), "k1")["id"] == stateful["id"]  # --idempotency-seconds: replayed
    jobs = requests.get(f"{base_url}/_simulator/jobs", timeout=TIMEOUT).json()
    [batch] = jobs[0]["batches"]
    assert [job["id"] for job in jobs] == [stateful["id"]]
    assert batch["recordCount"] == 250 and len(batch["segments"]) == 3  # --file-rows, --segment-rows
    segment = session.get(f"{base_url}/v1/files/{batch['segments'][0]}", timeout=TIMEOUT)
    assert segment.status_code == 200 and segment.headers["Content-Encoding"] == "gzip"  # --file-transport-gzip
    [whole] = session.get(f"{base_url}/v1/batch-query/jobs/{submit(job_body(), 'k2')['id']}", timeout=TIMEOUT).json()[
        "batches"
    ]
    too_large = session.get(f"{base_url}/v1/files/{whole['fileId']}", timeout=TIMEOUT)
    assert too_large.status_code == 403 and "<security:max-object-size>1MB" in too_large.text  # --max-file-bytes


@pytest.mark.parametrize(
    "option",
    [
        ["--segment-rows", "0"],
        ["--file-rows", "-1"],
        ["--max-file-bytes", "-5"],
        ["--idempotency-seconds", "-1"],
        ["--time-zone", "Nowhere/City"],
        ["--index-delay", "-1"],
        ["--max-query-rows", "-1"],
    ],
)
def test_bad_file_options_are_usage_errors(option: list[str]) -> None:
    result = subprocess.run([*MODULE, *CREDENTIALS, *option], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert option[0].lstrip("-").replace("-", "_") in result.stderr and result.stdout == ""


def test_tenant_options(serve: Serve) -> None:
    _, base_url = serve(
        *("--job-seconds", "0", "--time-zone", "Europe/Berlin", "--index-delay", "30", "--max-query-rows", "1"),
        "--no-sample-data",
    )
    control = f"{base_url}/_simulator"
    tenant = requests.get(f"{control}/tenant", timeout=TIMEOUT).json()
    assert (tenant["time_zone"], tenant["index_delay"]) == ("Europe/Berlin", 30)  # --time-zone, --index-delay
    requests.post(f"{control}/tenant/clock", json={"now": "2024-01-01T00:00:00Z"}, timeout=TIMEOUT)
    rows = [{"Id": "A1"}, {"Id": "A2"}]
    requests.post(f"{control}/tables/Account/rows", json={"rows": rows}, timeout=TIMEOUT).raise_for_status()
    assert requests.get(f"{control}/tables/Account/rows?visible=true", timeout=TIMEOUT).json() == []
    requests.post(f"{control}/tenant/clock", json={"advance": 30}, timeout=TIMEOUT)
    session = requests.Session()
    token = session.post(f"{base_url}/oauth/token", data=token_form(), timeout=TIMEOUT).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    job_id = session.post(
        f"{base_url}/v1/batch-query/", json=job_body("select Id from Account"), timeout=TIMEOUT
    ).json()["id"]
    job = session.get(f"{base_url}/v1/batch-query/jobs/{job_id}", timeout=TIMEOUT).json()
    assert job["status"] == "aborted" and job["batches"][0]["status"] == "aborted"  # --max-query-rows


def test_clock_skew_option(serve: Serve) -> None:
    _, base_url = serve("--clock-skew", "-900")
    answer = requests.get(f"{base_url}/_simulator/tenant", timeout=TIMEOUT)
    behind = (datetime.now(timezone.utc) - parsedate_to_datetime(answer.headers["Date"])).total_seconds()
    assert answer.json()["skew"] == -900 and 899 <= behind <= 901


def test_the_default_index_delay_is_a_minute(serve: Serve) -> None:
    _, base_url = serve()
    assert requests.get(f"{base_url}/_simulator/tenant", timeout=TIMEOUT).json()["index_delay"] == 60


def test_deny_object_option(serve: Serve) -> None:
    _, base_url = serve("--deny-object", "Invoice", "--deny-object", "Account", "--job-seconds", "0")
    session = requests.Session()
    session.headers["Authorization"] = (
        "Bearer " + requests.post(f"{base_url}/oauth/token", data=token_form(), timeout=TIMEOUT).json()["access_token"]
    )
    job_id = session.post(f"{base_url}/v1/batch-query/", json=job_body(), timeout=TIMEOUT).json()["id"]
    job = session.get(f"{base_url}/v1/batch-query/jobs/{job_id}", timeout=TIMEOUT).json()
    assert (job["status"], job["batches"]) == ("completed", [])
    tenant = requests.get(f"{base_url}/_simulator/tenant", timeout=TIMEOUT).json()
    assert tenant["denied_objects"] == ["Account", "Invoice"]


def test_no_options_serve_a_tenant_that_looks_like_zuora() -> None:
    process = subprocess.Popen([*MODULE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base_url = first_line(process)
        tenant = requests.get(f"{base_url}/_simulator/tenant", timeout=TIMEOUT).json()
        assert (
            tenant["tables"] == {"Account": 242, "Subscription": 361} and tenant["time_zone"] == "America/Los_Angeles"
        )
        session = requests.Session()
        form = token_form(client_id="5a1b0000-0000-4000-8000-a9a000000000", client_secret="simulator-secret")
        token = session.post(f"{base_url}/oauth/token", data=form, timeout=TIMEOUT).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        now = datetime.now(timezone.utc)
        start, end = (now - timedelta(days=7)).isoformat(), (now - timedelta(days=3)).isoformat()
        fields = "Id, AccountNumber, Name, Status, UpdatedDate"
        query = f"select {fields} from Account where UpdatedDate >= '{start}' and UpdatedDate < '{end}'"
        job_id = session.post(
            f"{base_url}/v1/batch-query/", json=job_body(query, dateTimeUtc=True), timeout=TIMEOUT
        ).json()["id"]
        deadline = time.monotonic() + 15
        while (job := session.get(f"{base_url}/v1/batch-query/jobs/{job_id}", timeout=TIMEOUT).json())[
            "status"
        ] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        records = csv_records(
            session.get(f"{base_url}/v1/files/{job['batches'][0]['fileId']}", timeout=TIMEOUT).content
        )
        assert 10 <= len(records) == job["batches"][0]["recordCount"] < 240
        for record in records:
            assert re.fullmatch(r"[0-9a-f]{32}", record["Id"]) and re.fullmatch(r"A\d{8}", record["AccountNumber"])
            assert record["Status"] in ("Active", "Draft", "Canceled") and record["Name"]
            updated = datetime.strptime(record["UpdatedDate"], "%Y-%m-%dT%H:%M:%S%z")
            assert now - timedelta(days=7) <= updated < now - timedelta(days=3)
    finally:
        process.terminate()
        process.communicate(timeout=TIMEOUT)


def test_late_commit_option(serve: Serve) -> None:
    _, base_url = serve("--late-commit", "Account:7200:600", "--late-commit", "Invoice:60")
    control = f"{base_url}/_simulator/tables"
    visible = {row["Id"] for row in requests.get(f"{control}/Account/rows?visible=true", timeout=TIMEOUT).json()}
    hidden = [
        row for row in requests.get(f"{control}/Account/rows", timeout=TIMEOUT).json() if row["Id"] not in visible
    ]
    now = datetime.now(timezone.utc)
    ages = sorted(
        (now - datetime.fromisoformat(row["UpdatedDate"].replace("Z", "+00:00"))).total_seconds() for row in hidden
    )
    # The option's row, stamped 2 hours ago, beside the sample's own two late commits (1.5 and 2.5 hours).
    assert len(ages) == 3 and 7195 <= ages[1] <= 7210 and all(row["AccountNumber"] for row in hidden)
    assert requests.get(f"{control}/Invoice/rows?visible=true", timeout=TIMEOUT).json() == []  # the index delay: 60 s


@pytest.mark.parametrize("spec", ["Account", "Account:soon", "bad-table:60", "Account:-5", "Account:1:2:3"])
def test_a_bad_late_commit_is_a_usage_error(spec: str) -> None:
    result = subprocess.run([*MODULE, "--late-commit", spec], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2 and "late-commit" in result.stderr and result.stdout == ""
