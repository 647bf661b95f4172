"""GET /v1/files/{fileId}: deterministic CSV, gzip and zip results."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zipfile

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator

from .conftest import SimFactory
from .helpers import ACCOUNT_QUERY, TIMEOUT, Client, job_body


@pytest.fixture
def instant(make_sim: SimFactory) -> AquaSimulator:
    return make_sim(job_seconds=0)


def completed_batch(client: Client, **fields: object) -> dict:
    job = client.submit_job(job_body(ACCOUNT_QUERY, **fields))
    return client.wait_for(job["id"], "completed")["batches"][0]


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize(
    ("file_format", "content_type"),
    [("csv", "text/csv; charset=utf-8"), ("gzip", "application/x-gzip"), ("zip", "application/zip")],
)
def test_download_row_count_matches_record_count(instant: AquaSimulator, file_format: str, content_type: str) -> None:
    client = Client(instant.base_url)
    batch = completed_batch(client, format=file_format)
    response = client.file(batch["fileId"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert "Content-Encoding" not in response.headers
    if file_format == "gzip":
        text = gzip.decompress(response.content).decode()
    elif file_format == "zip":
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.namelist() == ["Q0.csv"]
            text = archive.read("Q0.csv").decode()
    else:
        text = response.text
    rows = rows_of(text)
    assert rows[0] == ["Id", "Name", "Account.Id"]
    assert len(rows) - 1 == batch["recordCount"]
    assert rows[1] == ["Id-000001", "Name-000001", "Account.Id-000001"]
    assert client.file(batch["fileId"]).content == response.content  # same bytes every time


def test_record_count_formula(instant: AquaSimulator) -> None:
    batch = completed_batch(Client(instant.base_url))
    assert batch["recordCount"] == 1 + int(hashlib.sha256(ACCOUNT_QUERY.encode()).hexdigest()[:8], 16) % 1000


def test_query_labels_and_null_replacement(instant: AquaSimulator) -> None:
    client = Client(instant.base_url)
    batch = completed_batch(client, useQueryLabels=True, nullReplacement="NULL")
    rows = rows_of(client.file(batch["fileId"]).text)
    assert rows[0] == ["Account.Id", "Account.Name", "Account.Id"]
    assert rows[10][-1] == "NULL" and rows[9][-1] == "Account.Id-000009"
    plain = rows_of(client.file(completed_batch(client)["fileId"]).text)
    assert plain[10][-1] == ""


def test_file_alias_and_trailing_slash(instant: AquaSimulator) -> None:
    client = Client(instant.base_url)
    file_id = completed_batch(client)["fileId"]
    assert client.request("GET", f"/v1/file/{file_id}").status_code == 200
    assert client.request("GET", f"/v1/files/{file_id}/").status_code == 200


def test_unknown_file_is_404_and_files_need_a_token(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim.base_url)
    job_id = client.submit_job()["id"]
    assert client.file("0" * 32).status_code == 404
    sim.finish_job(job_id, "completed")
    file_id = sim.get_job(job_id)["batches"][0]["fileId"]
    assert client.file(file_id).status_code == 200
    anonymous = requests.get(f"{sim.base_url}/v1/files/{file_id}", timeout=TIMEOUT)
    assert anonymous.status_code == 401
