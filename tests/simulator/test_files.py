"""GET /v1/files/{fileId}: deterministic CSV, gzip and zip results, streamed from a disk spool.

Also: RFC 4180 quoted multi-line cells, byte ranges, transport gzip, the 403 size cap, purged
files, and the segments of a stateful full load.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import threading
import time
import zipfile

import pytest
import requests

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.simulator.files import FileTooLargeError
from airflow_provider_zuora_aqua.simulator.results import QUOTED_VALUE
from tests.support.sim_client import ACCOUNT_QUERY, TIMEOUT, Client, SimFactory, job_body, stateful_body

HEADER = ["Id", "Name", "Account.Id"]


@pytest.fixture
def instant(make_sim: SimFactory) -> AquaSimulator:
    return make_sim(job_seconds=0)


def completed_job(client: Client, body: dict | None = None, **fields: object) -> dict:
    job = client.submit_job(body or job_body(ACCOUNT_QUERY, **fields))
    return client.wait_for(job["id"], "completed")


def completed_batch(client: Client, **fields: object) -> dict:
    return completed_job(client, **fields)["batches"][0]


def records_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def unpack(content: bytes, file_format: str) -> str:
    if file_format == "gzip":
        return gzip.decompress(content).decode("utf-8")
    if file_format == "zip":
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            [name] = archive.namelist()
            return archive.read(name).decode("utf-8")
    return content.decode("utf-8")


@pytest.mark.parametrize(
    ("file_format", "content_type", "filename"),
    [
        ("csv", "text/csv;charset=UTF-8", "Q0.csv"),
        ("gzip", "application/x-gzip;charset=UTF-8", "Q0.csv.gz"),
        ("zip", "application/zip;charset=UTF-8", "Q0.zip"),
    ],
)
def test_formats_hold_record_count_records(
    make_sim: SimFactory, file_format: str, content_type: str, filename: str
) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=100).base_url)
    batch = completed_batch(client, format=file_format)
    assert batch["recordCount"] == 100
    response = client.file(batch["fileId"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert "Content-Encoding" not in response.headers
    if file_format == "zip":
        assert zipfile.ZipFile(io.BytesIO(response.content)).namelist() == ["Q0.csv"]
    text = unpack(response.content, file_format)
    records = records_of(text)
    assert records[0] == HEADER
    assert len(records) - 1 == batch["recordCount"]
    assert records[1] == ["Id-000001", "Name-000001", "Account.Id-000001"]
    assert client.file(batch["fileId"]).content == response.content  # same bytes every time


def test_quoted_multi_line_cells_make_lines_differ_from_records(make_sim: SimFactory) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=70).base_url)
    batch = completed_batch(client)
    text = client.file(batch["fileId"]).text
    records = records_of(text)
    assert len(records) - 1 == 70
    quoted = [number for number, record in enumerate(records[1:], start=1) if record[1] == QUOTED_VALUE]
    assert quoted == list(range(7, 71, 7))
    assert records[70] == ["Id-000070", QUOTED_VALUE, ""]  # and null in the last column
    assert records[7] == ["Id-000007", 'a "quoted", multi-line\nvalue', "Account.Id-000007"]
    assert '"a ""quoted"", multi-line\nvalue"' in text  # RFC 4180: quoted, inner quotes doubled
    assert len(text.splitlines()) == 1 + 70 + len(quoted)  # counting lines is not counting records


def test_record_count_formula(instant: AquaSimulator) -> None:
    batch = completed_batch(Client(instant.base_url))
    assert batch["recordCount"] == 1 + int(hashlib.sha256(ACCOUNT_QUERY.encode()).hexdigest()[:8], 16) % 1000


def test_query_labels_and_null_replacement(make_sim: SimFactory) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=20).base_url)
    batch = completed_batch(client, useQueryLabels=True, nullReplacement='N,"A')
    records = records_of(client.file(batch["fileId"]).text)
    assert records[0] == ["Account.Id", "Account.Name", "Account.Id"]
    assert records[10][-1] == 'N,"A' and records[9][-1] == "Account.Id-000009"
    plain = records_of(client.file(completed_batch(client)["fileId"]).text)
    assert plain[10][-1] == "" and plain[20][-1] == ""


def test_single_column_query_quotes_its_only_column(make_sim: SimFactory) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=14).base_url)
    job = completed_job(client, job_body("select Id from Account"))
    records = records_of(client.file(job["batches"][0]["fileId"]).text)
    assert records[6:9] == [["Id-000006"], [QUOTED_VALUE], ["Id-000008"]]
    assert len(records) == 15


def test_byte_ranges(make_sim: SimFactory) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=50).base_url)
    file_id = completed_batch(client)["fileId"]
    whole = client.file(file_id).content
    size = len(whole)

    def ranged(spec: str) -> requests.Response:
        return client.file(file_id, headers={"Range": spec})

    tail = ranged("bytes=100-")
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert tail.content == whole[100:] and int(tail.headers["Content-Length"]) == size - 100
    middle = ranged("bytes=10-19")
    assert (middle.status_code, middle.content) == (206, whole[10:20])
    assert middle.headers["Content-Range"] == f"bytes 10-19/{size}"
    assert ranged(f"bytes=0-{size * 2}").content == whole  # an end past the file is clipped
    assert ranged("bytes=-5").content == whole[-5:]
    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        refused = ranged(unsatisfiable)
        assert refused.status_code == 416, unsatisfiable
        assert refused.headers["Content-Range"] == f"bytes */{size}"
    for ignored in ("bytes=5-2", "items=0-10", "bytes=0-1,5-6", "nonsense"):
        full = ranged(ignored)
        assert (full.status_code, full.content) == (200, whole), ignored


def test_transport_gzip_when_enabled_and_accepted(make_sim: SimFactory) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=200, file_transport_gzip=True).base_url)
    file_id = completed_batch(client)["fileId"]
    plain = client.file(file_id, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.headers["Accept-Ranges"] == "bytes"
    assert plain.headers["Vary"] == "Accept-Encoding"

    encoded = client.file(file_id, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = encoded.raw.read(decode_content=False)
    assert encoded.status_code == 200
    assert encoded.headers["Content-Encoding"] == "gzip"
    assert encoded.headers["Content-Type"] == "text/csv;charset=UTF-8"
    assert int(encoded.headers["Content-Length"]) == len(raw) < len(plain.content)
    assert "Accept-Ranges" not in encoded.headers
    assert gzip.decompress(raw) == plain.content

    # With transport gzip the Range is not honoured: the whole (gzipped) file comes back.
    ranged = client.file(file_id, headers={"Accept-Encoding": "gzip", "Range": "bytes=10-"})
    assert ranged.status_code == 200 and ranged.content == plain.content
    # Without it, the same Range is.
    assert client.file(file_id, headers={"Accept-Encoding": "identity", "Range": "bytes=10-"}).status_code == 206


def test_transport_gzip_only_for_files_over_1000_bytes_and_when_enabled(make_sim: SimFactory) -> None:
    small = Client(make_sim(job_seconds=0, file_rows=3, file_transport_gzip=True).base_url)
    response = small.file(completed_batch(small)["fileId"], headers={"Accept-Encoding": "gzip"})
    assert len(response.content) <= 1000 and "Content-Encoding" not in response.headers
    default = Client(make_sim(job_seconds=0, file_rows=200).base_url)
    response = default.file(completed_batch(default)["fileId"], headers={"Accept-Encoding": "gzip"})
    assert len(response.content) > 1000 and "Content-Encoding" not in response.headers


def test_gzip_format_with_transport_gzip_is_gzipped_twice(make_sim: SimFactory) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=500, file_transport_gzip=True).base_url)
    file_id = completed_batch(client, format="gzip")["fileId"]
    stored = client.file(file_id, headers={"Accept-Encoding": "identity"}).content
    response = client.file(file_id, headers={"Accept-Encoding": "gzip"})  # requests decodes the transport layer
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.content == stored
    assert len(records_of(unpack(response.content, "gzip"))) == 501


def test_files_over_the_size_cap_answer_403_max_object_size(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0, file_rows=100, max_file_bytes=1000)
    client = Client(sim.base_url)
    batch = completed_batch(client)
    response = client.file(batch["fileId"])
    assert response.status_code == 403
    assert response.text == "<security:max-object-size>1MB</security:max-object-size>"
    assert client.file(batch["fileId"]).status_code == 403  # remembered, not rebuilt
    # The cap applies to the file as stored: the same rows gzipped fit under it.
    assert client.file(completed_batch(client, format="gzip")["fileId"]).status_code == 200
    assert FileTooLargeError(2047 * 1024 * 1024).cap_megabytes == 2047


def test_files_are_purged_after_file_purge_seconds(make_sim: SimFactory) -> None:
    client = Client(make_sim(job_seconds=0, file_purge_seconds=0.5).base_url)
    file_id = completed_batch(client)["fileId"]
    assert client.file(file_id).status_code == 200
    deadline = time.monotonic() + 10
    while (response := client.file(file_id)).status_code == 200:
        assert time.monotonic() < deadline, "the file was never purged"
        time.sleep(0.05)
    assert response.status_code == 404
    reason = response.json()["reasons"][0]
    assert response.json()["success"] is False and reason["code"] == 50000040 and file_id in reason["message"]


def test_purge_files_by_job_and_all(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0)
    client = Client(sim.base_url)
    first = completed_job(client, job_body(ACCOUNT_QUERY, ACCOUNT_QUERY))
    second = completed_job(client)
    first_ids = [batch["fileId"] for batch in first["batches"]]
    second_id = second["batches"][0]["fileId"]
    assert client.file(first_ids[0]).status_code == 200
    assert sim.purge_files(first["id"]) == 2
    assert [client.file(file_id).status_code for file_id in first_ids] == [404, 404]
    assert client.file(second_id).status_code == 200
    assert sim.purge_files() == 3
    assert client.file(second_id).status_code == 404
    with pytest.raises(KeyError):
        sim.purge_files("0" * 32)
    # A job submitted after a purge keeps its files.
    assert client.file(completed_batch(client)["fileId"]).status_code == 200


def test_segments_of_a_stateful_full_load(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0, file_rows=25, segment_rows=10)
    client = Client(sim.base_url)
    job = completed_job(client, stateful_body(ACCOUNT_QUERY, format="gzip"))
    [batch] = job["batches"]
    assert job["segmented"] is True and batch["full"] is True
    assert "fileId" not in batch and len(batch["segments"]) == 3
    ids: list[str] = []
    for part, segment_id in enumerate(batch["segments"], start=1):
        response = client.file(segment_id)
        assert response.headers["Content-Disposition"] == f'attachment; filename="Q0_{part}.csv.gz"'
        records = records_of(unpack(response.content, "gzip"))
        assert records[0] == HEADER  # each segment is a complete CSV
        assert len(records) - 1 <= 10
        ids.extend(record[0] for record in records[1:])
    assert len(ids) == batch["recordCount"] == 25
    assert ids == [f"Id-{row:06d}" for row in range(1, 26)]  # in order, none lost or repeated

    # The next run of the same partner/project is incremental: one file, no segments.
    incremental = completed_job(client, stateful_body(ACCOUNT_QUERY))
    assert incremental["batches"][0]["full"] is False and "fileId" in incremental["batches"][0]
    assert "segments" not in incremental["batches"][0] and "segmented" not in incremental
    assert sim.purge_files(job["id"]) == 3  # a split batch's files are its segments
    assert client.file(batch["segments"][0]).status_code == 404


@pytest.mark.parametrize(
    ("body", "rows"),
    [(job_body(ACCOUNT_QUERY), 25), (stateful_body(ACCOUNT_QUERY), 10)],
    ids=["stateless", "stateful-at-the-limit"],
)
def test_no_segments_for_stateless_or_small_loads(make_sim: SimFactory, body: dict, rows: int) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=rows, segment_rows=10).base_url)
    [batch] = completed_job(client, body)["batches"]
    assert "segments" not in batch
    assert len(records_of(client.file(batch["fileId"]).text)) - 1 == rows


def test_concurrent_first_downloads_get_the_same_bytes(make_sim: SimFactory) -> None:
    client = Client(make_sim(job_seconds=0, file_rows=100_000).base_url)
    file_id = completed_batch(client, format="zip")["fileId"]
    digests: list[str] = []

    def download() -> None:
        response = requests.get(
            f"{client.base_url}/v1/files/{file_id}", headers={"Authorization": f"Bearer {client.token}"}, timeout=60
        )
        digests.append(hashlib.sha256(response.content).hexdigest())

    threads = [threading.Thread(target=download) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(digests) == 4 and len(set(digests)) == 1


def test_spooled_files_are_deleted_on_stop(make_sim: SimFactory) -> None:
    sim = make_sim(job_seconds=0)
    assert sim.files.directory is None  # nothing is written before a download
    client = Client(sim.base_url)
    assert client.file(completed_batch(client)["fileId"]).status_code == 200
    directory = sim.files.directory
    assert directory is not None and os.listdir(directory)
    sim.stop()
    assert not os.path.exists(directory)


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
