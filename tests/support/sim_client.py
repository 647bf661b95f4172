"""A thin AQuA client over requests, for exercising the simulator over real HTTP."""

from __future__ import annotations

import csv
import gzip
import io
import selectors
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from typing import Any

import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator

# 36 characters: the Zuora SDK refuses client ids of any other length.
CLIENT_ID = "5f1c1a0e-7b7d-4b1e-9d59-6a8c0e3f2b11"
CLIENT_SECRET = "sim-secret-4c9a1f0b7e"
ACCOUNT_QUERY = "select Id, Name, Account.Id from Account where Status = 'Active'"
INVOICE_QUERY = "select Id, InvoiceNumber, Amount from Invoice"
HEX32 = r"[0-9a-f]{32}"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000"
TIMEOUT = 10
#: The simulator as its own process: ``[*MODULE, "--client-id", ...]``.
MODULE = [sys.executable, "-m", "airflow_provider_zuora_aqua.simulator"]


def first_line(process: subprocess.Popen[str], timeout: float = 15) -> str:
    """The first line the simulator process prints (its base URL), waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "the simulator printed nothing"
    return process.stdout.readline().strip()


def token_form(**overrides: str) -> dict[str, str]:
    """The token request form, with fields replaced by ``overrides``."""
    return {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "client_credentials", **overrides}


def stateful_body(*queries: str, **fields: Any) -> dict[str, Any]:
    """A stateful (version 1.1) submit body for partner ``acme``, project ``p1``."""
    return job_body(*queries, **{"version": "1.1", "partner": "acme", "project": "p1", **fields})


def job_body(*queries: str, **fields: Any) -> dict[str, Any]:
    """A stateless submit body; each query gets a name from its position."""
    return {
        "format": "csv",
        "version": "1.0",
        "name": "sim-test",
        "encrypted": "none",
        "queries": [
            {"name": f"Q{index}", "query": query, "type": "zoqlexport"}
            for index, query in enumerate(queries or (ACCOUNT_QUERY,))
        ],
        **fields,
    }


def window_query(start: str, end: str, table: str = "Account", fields: str = "Id, Name, UpdatedDate") -> str:
    """A half-open ``[start, end)`` window on ``UpdatedDate``, the way an incremental export asks."""
    return f"select {fields} from {table} where UpdatedDate >= '{start}' and UpdatedDate < '{end}'"


def csv_records(content: bytes, file_format: str = "csv") -> list[dict[str, str]]:
    """The records of a result file (csv, gzip or zip), read with a CSV parser."""
    if file_format == "gzip":
        content = gzip.decompress(content)
    elif file_format == "zip":
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            content = archive.read(archive.namelist()[0])
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))


class Client:
    """Authenticated calls against one simulator."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        response = self.session.post(f"{base_url}/oauth/token", data=token_form(), timeout=TIMEOUT)
        response.raise_for_status()
        self.token = response.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.base_url}{path}", timeout=TIMEOUT, **kwargs)

    def submit(self, body: dict[str, Any] | None = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", "/v1/batch-query/", json=job_body() if body is None else body, **kwargs)

    def submit_job(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.submit(body)
        assert response.status_code == 200 and "id" in response.json(), response.text
        return response.json()

    def get_job(self, job_id: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", f"/v1/batch-query/jobs/{job_id}", **kwargs)

    def delete_job(self, job_id: str) -> requests.Response:
        return self.request("DELETE", f"/v1/batch-query/jobs/{job_id}")

    def file(self, file_id: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", f"/v1/files/{file_id}", **kwargs)

    def wait_for(self, job_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id).json()
            if job["status"] == status:
                return job
            assert time.monotonic() < deadline, f"job still {job['status']}, wanted {status}"
            time.sleep(0.02)

    def export(self, *queries: str, **fields: Any) -> tuple[dict[str, Any], list[list[dict[str, str]]]]:
        """Submit a stateless job, wait for it to end, and read every completed batch's file.

        Returns the final job JSON and, per batch, its records (empty for a batch with no file).
        """
        return self.export_body(job_body(*queries, **fields))

    def export_body(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[list[dict[str, str]]]]:
        """:meth:`export` for a whole submit body."""
        job_id = self.submit_job(body)["id"]
        deadline = time.monotonic() + 10
        while (job := self.get_job(job_id).json())["status"] in ("submitted", "executing"):
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.02)
        files = []
        for batch in job["batches"]:
            if "fileId" not in batch:
                files.append([])
                continue
            response = self.file(batch["fileId"])
            assert response.status_code == 200, response.text
            files.append(csv_records(response.content, str(body.get("format", "csv")).lower()))
        return job, files


#: The ``make_sim`` fixture: starts simulators with the test credentials.
SimFactory = Callable[..., AquaSimulator]
