"""Result downloads against the AQuA simulator over HTTP: formats, segments, faults, destinations."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests

from airflow_provider_zuora_aqua.exceptions import (
    AquaConfigurationError,
    AquaFileAccessDeniedError,
    AquaFileNotFoundError,
    AquaFileTooLargeError,
    AquaIntegrityError,
    AquaJobFailedError,
)
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.results.delivery import MANIFEST_NAME, download_job_results
from airflow_provider_zuora_aqua.results.destination import resolve_destination
from airflow_provider_zuora_aqua.results.staging import StagedFile
from airflow_provider_zuora_aqua.simulator import AquaSimulator
from tests.support.credentials import CLIENT_ID, CLIENT_SECRET, CONN_ID, connection_json
from tests.support.s3 import fresh_bucket

ACCOUNTS = {"name": "accounts", "query": "select Id, Name, Notes from Account"}
MIB = 1024 * 1024

SimFactory = Callable[..., AquaSimulator]


@pytest.fixture
def make_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimFactory]:
    """Start a simulator with the given options and point the default connection at it."""
    started: list[AquaSimulator] = []

    def make(**options: Any) -> AquaSimulator:
        sim = AquaSimulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, job_seconds=0, **options).start()
        started.append(sim)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
        return sim

    yield make
    for sim in started:
        sim.stop()


def completed_job(hook: ZuoraAquaHook, file_format: str = "csv", queries: list | None = None, **fields: Any) -> dict:
    body = {"format": file_format, "version": "1.0", "queries": queries or [ACCOUNTS], **fields}
    job_id = hook.submit_job(body)["id"]
    deadline = time.monotonic() + 10
    while (job := hook.get_job(job_id))["status"] != "completed":
        assert time.monotonic() < deadline, f"job never completed: {job}"
        time.sleep(0.05)
    return job


def raw_file(sim: AquaSimulator, hook: ZuoraAquaHook, file_id: str) -> bytes:
    """The stored bytes as a plain client gets them (no transport encoding asked)."""
    response = requests.get(
        f"{sim.base_url}/v1/files/{file_id}",
        headers={"Authorization": f"Bearer {hook.get_access_token()}", "Accept-Encoding": "identity"},
        timeout=30,
    )
    assert response.status_code == 200
    return response.content


def csv_records(data: bytes, file_format: str) -> int:
    """Records as Python's csv module reads them, header excluded."""
    if file_format == "gzip":
        data = gzip.decompress(data)
    elif file_format == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            [member] = archive.namelist()
            data = archive.read(member)
    return len([row for row in csv.reader(io.StringIO(data.decode(), newline="")) if row]) - 1


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


class TestDownloadFile:
    @pytest.mark.parametrize("file_format", ["csv", "gzip", "zip"])
    def test_formats_are_stored_as_served_and_counted_as_csv_records(self, make_sim, tmp_path, file_format):
        sim = make_sim(file_rows=700)
        hook = ZuoraAquaHook()
        batch = completed_job(hook, file_format)["batches"][0]

        result = hook.download_file(batch["fileId"], tmp_path / "out", expected_records=batch["recordCount"])

        served = raw_file(sim, hook, batch["fileId"])
        stored = (tmp_path / "out").read_bytes()
        assert stored == served
        assert result == {
            "file_id": batch["fileId"],
            "uri": (tmp_path / "out").as_uri(),
            "format": file_format,
            "bytes": len(served),
            "records": 700,
            "sha256": hashlib.sha256(served).hexdigest(),
        }
        # The simulator's cells hold quoted newlines: more lines than records.
        assert csv_records(stored, file_format) == 700
        assert listing(tmp_path) == ["out"]

    def test_transport_gzip_is_decoded_not_stored(self, make_sim, tmp_path):
        sim = make_sim(file_rows=2000, file_transport_gzip=True)
        hook = ZuoraAquaHook()
        batch = completed_job(hook, "csv")["batches"][0]

        result = hook.download_file(batch["fileId"], str(tmp_path / "accounts.csv"))

        [request] = sim.requests_for("file")
        assert "gzip" in request.headers["Accept-Encoding"]
        served = raw_file(sim, hook, batch["fileId"])
        assert (tmp_path / "accounts.csv").read_bytes() == served
        assert served.startswith(b"Id,Name,Notes\n")
        assert result["sha256"] == hashlib.sha256(served).hexdigest()
        assert result["records"] == 2000

    def test_transport_gzip_is_really_sent(self, make_sim):
        """The check above means something: the simulator does gzip the answer for this client."""
        sim = make_sim(file_rows=2000, file_transport_gzip=True)
        hook = ZuoraAquaHook()
        file_id = completed_job(hook, "csv")["batches"][0]["fileId"]
        response = requests.get(
            f"{sim.base_url}/v1/files/{file_id}",
            headers={"Authorization": f"Bearer {hook.get_access_token()}", "Accept-Encoding": "gzip"},
            stream=True,
            timeout=30,
        )
        with response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert response.raw.read(2, decode_content=False) == b"\x1f\x8b"

    @pytest.mark.parametrize("transport_gzip", [False, True], ids=["identity", "transport-gzip"])
    def test_dropped_mid_file_without_a_validator_starts_again_and_matches_a_clean_download(
        self, make_sim, tmp_path, transport_gzip
    ):
        """
        The simulator sends no ETag or Last-Modified: nothing would tell a changed file apart,
        so the second attempt asks for the whole file (resumes with If-Range:
        test_hook_hostile_downloads.py).
        """
        # About 3 MiB: more than one read, so half the file is held when the connection drops.
        sim = make_sim(file_rows=90_000, file_transport_gzip=transport_gzip)
        hook = ZuoraAquaHook()
        batch = completed_job(hook, "csv")["batches"][0]
        clean = hook.download_file(batch["fileId"], tmp_path / "clean.csv")
        assert clean["bytes"] > 2 * MIB
        sim.clear_requests()
        sim.add_fault("file", "drop_mid", count=1)

        result = hook.download_file(batch["fileId"], tmp_path / "dropped.csv", expected_records=batch["recordCount"])

        assert result["sha256"] == clean["sha256"]
        assert (tmp_path / "dropped.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()
        first, second = sim.requests_for("file")
        assert (first.fault, "Range" in first.headers) == ("drop_mid", False)
        assert (second.status, "Range" in second.headers) == (200, False)
        assert listing(tmp_path) == ["clean.csv", "dropped.csv"]

    def test_dropped_before_a_full_read_restarts_from_zero(self, make_sim, tmp_path):
        sim = make_sim(file_rows=500)
        hook = ZuoraAquaHook()
        batch = completed_job(hook, "gzip")["batches"][0]
        sim.add_fault("file", "drop_mid", count=2)

        result = hook.download_file(batch["fileId"], tmp_path / "a.csv.gz", expected_records=batch["recordCount"])

        assert [("Range" in request.headers, request.fault) for request in sim.requests_for("file")] == [
            (False, "drop_mid"),
            (False, "drop_mid"),
            (False, None),
        ]
        assert result["sha256"] == hashlib.sha256(raw_file(sim, hook, batch["fileId"])).hexdigest()

    def test_record_count_mismatch_publishes_nothing(self, make_sim, tmp_path):
        make_sim(file_rows=300)
        hook = ZuoraAquaHook()
        batch = completed_job(hook, "csv")["batches"][0]

        with pytest.raises(AquaIntegrityError) as raised:
            hook.download_file(batch["fileId"], tmp_path / "accounts.csv", expected_records=301)

        assert batch["fileId"] in str(raised.value)
        assert "holds 300 records, but Zuora reported 301" in str(raised.value)
        assert listing(tmp_path) == []  # neither the final file nor a temporary one

    def test_size_cap_403_says_split_the_query(self, make_sim, tmp_path):
        sim = make_sim(file_rows=5000, max_file_bytes=10_000)
        hook = ZuoraAquaHook()
        file_id = completed_job(hook, "csv")["batches"][0]["fileId"]

        with pytest.raises(AquaFileTooLargeError) as raised:
            hook.download_file(file_id, tmp_path / "big.csv")

        message = str(raised.value)
        assert file_id in message and "2,047 MB" in message and "UpdatedDate" in message
        assert raised.value.status_code == 403
        assert len(sim.requests_for("file")) == 1  # final: not retried
        assert listing(tmp_path) == []

    def test_permission_403_says_the_user_may_not_export(self, make_sim, tmp_path):
        sim = make_sim(file_rows=10)
        hook = ZuoraAquaHook()
        file_id = completed_job(hook, "csv")["batches"][0]["fileId"]
        sim.add_fault("file", 403)

        with pytest.raises(AquaFileAccessDeniedError) as raised:
            hook.download_file(file_id, tmp_path / "a.csv")

        assert file_id in str(raised.value) and "permission to export data" in str(raised.value)
        assert not isinstance(raised.value, AquaFileTooLargeError)
        assert listing(tmp_path) == []

    def test_purged_file_404_says_run_the_export_again(self, make_sim, tmp_path):
        sim = make_sim(file_rows=10)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv")
        file_id = job["batches"][0]["fileId"]
        sim.purge_files(job["id"])

        with pytest.raises(AquaFileNotFoundError) as raised:
            hook.download_file(file_id, tmp_path / "a.csv")

        message = str(raised.value)
        assert file_id in message and "72 hours" in message and "again" in message
        assert raised.value.status_code == 404

    def test_file_older_than_the_purge_time_is_404(self, make_sim, tmp_path):
        make_sim(file_rows=10, file_purge_seconds=0.2)
        hook = ZuoraAquaHook()
        file_id = completed_job(hook, "csv")["batches"][0]["fileId"]
        time.sleep(0.3)
        with pytest.raises(AquaFileNotFoundError, match=file_id):
            hook.download_file(file_id, tmp_path / "a.csv")

    def test_expired_token_is_replaced_once(self, make_sim, tmp_path):
        sim = make_sim(file_rows=10)
        hook = ZuoraAquaHook()
        batch = completed_job(hook, "csv")["batches"][0]
        sim.expire_tokens()

        assert hook.download_file(batch["fileId"], tmp_path / "a.csv")["records"] == 10
        assert [request.status for request in sim.requests_for("file")] == [401, 200]
        assert sim.tokens_issued == 2

    @pytest.mark.parametrize("file_id", ["../../etc/passwd", "a/b", "x?y=1", "", None, "%2e%2e"])
    def test_file_id_is_checked_before_any_request(self, make_sim, tmp_path, file_id):
        sim = make_sim()
        with pytest.raises(AquaConfigurationError, match="not a valid AQuA file id"):
            ZuoraAquaHook().download_file(file_id, tmp_path / "a.csv")
        assert sim.requests == []


class TestDownloadJobResults:
    def test_segments_are_parts_and_add_up_to_the_record_count(self, make_sim, tmp_path):
        make_sim(file_rows=1200, segment_rows=500)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "gzip", version="1.1", partner="p", project="q")
        [batch] = job["batches"]
        assert len(batch["segments"]) == 3

        manifest = download_job_results(hook.fetch_file, job, tmp_path).to_json()

        names = ["accounts.part1.csv.gz", "accounts.part2.csv.gz", "accounts.part3.csv.gz"]
        assert listing(tmp_path) == [MANIFEST_NAME, *names]
        assert [(entry["file_id"], entry["segment"], entry["records"]) for entry in manifest["files"]] == [
            (batch["segments"][0], 1, 500),
            (batch["segments"][1], 2, 500),
            (batch["segments"][2], 3, 200),
        ]
        for entry, name in zip(manifest["files"], names):
            data = (tmp_path / name).read_bytes()
            assert entry["uri"] == (tmp_path / name).as_uri()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
            assert csv_records(data, "gzip") == entry["records"]  # each segment has its own header
        assert json.loads((tmp_path / MANIFEST_NAME).read_text()) == manifest

    def test_manifest_lists_every_batch_with_the_documented_keys(self, make_sim, tmp_path):
        make_sim(file_rows=40)
        hook = ZuoraAquaHook()
        queries = [ACCOUNTS, {"name": "invoices", "query": "select Id, Amount from Invoice"}]
        job = completed_job(hook, "zip", queries)

        manifest = download_job_results(hook.fetch_file, job, str(tmp_path / "new" / "folder")).to_json()

        folder = tmp_path / "new" / "folder"
        assert manifest["job_id"] == job["id"]
        assert manifest["destination"] == folder.as_uri()
        assert [file["batch"] for file in manifest["files"]] == ["accounts", "invoices"]
        assert set(manifest["files"][0]) == {"batch", "file_id", "uri", "format", "bytes", "records", "sha256"}
        assert {file["format"] for file in manifest["files"]} == {"zip"}
        assert listing(folder) == [MANIFEST_NAME, "accounts.zip", "invoices.zip"]

    def test_batch_names_cannot_leave_the_folder_or_collide(self, make_sim, tmp_path):
        make_sim(file_rows=5)
        hook = ZuoraAquaHook()
        names = ["../../x", "/etc/x", "..", "X", "a/../../b", ".hidden", "accounts"]
        queries = [
            {"name": name, "query": f"select Id from Account where Name = 'q{i}'"} for i, name in enumerate(names)
        ]
        job = completed_job(hook, "csv", queries)
        folder = tmp_path / "inner" / "out"
        before = sorted(str(path) for path in tmp_path.rglob("*"))

        manifest = download_job_results(hook.fetch_file, job, folder).to_json()

        expected = ["x.csv", "etc_x.csv", "batch3.csv", "X-2.csv", "a_.._.._b.csv", "hidden.csv", "accounts.csv"]
        assert [Path(file["uri"]).name for file in manifest["files"]] == expected
        assert listing(folder) == sorted([MANIFEST_NAME, *expected])
        created = sorted(set(str(path) for path in tmp_path.rglob("*")) - set(before))
        assert all(path.startswith(str(folder)) or str(folder).startswith(path) for path in created)

    def test_mismatch_publishes_nothing_of_that_batch_and_no_manifest(self, make_sim, tmp_path):
        make_sim(file_rows=30)
        hook = ZuoraAquaHook()
        queries = [ACCOUNTS, {"name": "invoices", "query": "select Id from Invoice"}]
        job = completed_job(hook, "csv", queries)
        job["batches"][1]["recordCount"] += 1

        with pytest.raises(AquaIntegrityError, match=job["batches"][1]["fileId"]):
            download_job_results(hook.fetch_file, job, tmp_path)

        # The verified batch only: no temp file, no manifest; the hidden journal tells the next run what is here.
        assert listing(tmp_path) == [".aqua-replacing.json", "accounts.csv"]

    def test_segment_sum_mismatch_publishes_none_of_the_segments(self, make_sim, tmp_path):
        make_sim(file_rows=120, segment_rows=50)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv", version="1.1", partner="p", project="q")
        job["batches"][0]["recordCount"] = 119

        with pytest.raises(AquaIntegrityError, match="3 segments .* hold 120 records, but Zuora reported 119"):
            download_job_results(hook.fetch_file, job, tmp_path)

        assert listing(tmp_path) == []

    def test_file_uri_destination(self, make_sim, tmp_path):
        make_sim(file_rows=12)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv")

        manifest = download_job_results(hook.fetch_file, job, (tmp_path / "by uri").as_uri()).to_json()

        assert manifest["destination"] == (tmp_path / "by uri").as_uri()
        assert listing(tmp_path / "by uri") == [MANIFEST_NAME, "accounts.csv"]
        assert manifest["files"][0]["records"] == 12


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh bucket, and the Airflow connection ``aws_moto`` (type aws) pointing at the server."""
    return fresh_bucket(s3_server, monkeypatch, "exports")


class SpoolLog(list):
    """The spool files made during a test; ``most_at_once`` counts those alive together."""

    most_at_once = 0


@pytest.fixture
def spools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SpoolLog:
    """Record the spool files made during the test, in a temporary folder private to the test."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    made = SpoolLog()
    mkstemp = tempfile.mkstemp

    def recording_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        descriptor, name = mkstemp(*args, **kwargs)
        made.append(Path(name))
        made.most_at_once = max(made.most_at_once, sum(spool.exists() for spool in made))
        return descriptor, name

    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    return made


class TestObjectStorage:
    def test_s3_destination_with_a_connection(self, make_sim, s3_bucket, spools):
        make_sim(file_rows=250)
        hook = ZuoraAquaHook()
        queries = [ACCOUNTS, {"name": "invoices", "query": "select Id from Invoice"}]
        job = completed_job(hook, "gzip", queries)

        manifest = download_job_results(
            hook.fetch_file, job, f"s3://{s3_bucket.bucket_name}/zuora/run-1/", destination_conn_id="aws_moto"
        ).to_json()

        bucket = s3_bucket.bucket_name
        keys = sorted(item["Key"] for item in s3_bucket.list_objects_v2(Bucket=bucket)["Contents"])
        assert keys == ["zuora/run-1/_manifest.json", "zuora/run-1/accounts.csv.gz", "zuora/run-1/invoices.csv.gz"]
        for entry in manifest["files"]:
            key = entry["uri"].removeprefix(f"s3://{bucket}/")
            data = s3_bucket.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert csv_records(data, "gzip") == entry["records"] == 250
        stored_manifest = s3_bucket.get_object(Bucket=bucket, Key="zuora/run-1/_manifest.json")["Body"].read()
        assert json.loads(stored_manifest) == manifest
        assert manifest["destination"] == f"s3://{bucket}/zuora/run-1"
        assert spools and not any(spool.exists() for spool in spools)

    def test_s3_mismatch_uploads_nothing_and_leaves_no_spool(self, make_sim, s3_bucket, spools):
        make_sim(file_rows=20)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv")
        job["batches"][0]["recordCount"] = 21

        with pytest.raises(AquaIntegrityError):
            download_job_results(hook.fetch_file, job, f"s3://aws_moto@{s3_bucket.bucket_name}/out/")

        assert s3_bucket.list_objects_v2(Bucket=s3_bucket.bucket_name).get("KeyCount") == 0
        assert spools and not any(spool.exists() for spool in spools)

    def test_s3_segments_wait_hidden_then_move_into_place(self, make_sim, s3_bucket, spools):
        make_sim(file_rows=130, segment_rows=50)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv", version="1.1", partner="p", project="q")
        destination = f"s3://aws_moto@{s3_bucket.bucket_name}/segments/"

        manifest = download_job_results(hook.fetch_file, job, destination).to_json()

        keys = sorted(item["Key"] for item in s3_bucket.list_objects_v2(Bucket=s3_bucket.bucket_name)["Contents"])
        parts = [f"segments/accounts.part{number}.csv" for number in (1, 2, 3)]
        assert keys == sorted(["segments/_manifest.json", *parts])
        assert [file["records"] for file in manifest["files"]] == [50, 50, 30]
        # 3 segments, the journal and the manifest
        assert len(spools) == 5 and not any(spool.exists() for spool in spools)
        assert spools.most_at_once == 1  # each verified segment left the local disk before the next came

    def test_s3_segment_sum_mismatch_leaves_no_object(self, make_sim, s3_bucket, spools):
        make_sim(file_rows=130, segment_rows=50)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv", version="1.1", partner="p", project="q")
        job["batches"][0]["recordCount"] = 131

        with pytest.raises(AquaIntegrityError, match="none of them was published"):
            download_job_results(hook.fetch_file, job, f"s3://aws_moto@{s3_bucket.bucket_name}/segments/")

        # The verified segments waited under hidden names: removed, like the local spools.
        assert s3_bucket.list_objects_v2(Bucket=s3_bucket.bucket_name).get("KeyCount") == 0
        assert len(spools) == 3 and not any(spool.exists() for spool in spools)
        assert spools.most_at_once == 1

    def test_hook_download_file_to_an_object_storage_path(self, make_sim, s3_bucket):
        from airflow.sdk import ObjectStoragePath

        make_sim(file_rows=15)
        hook = ZuoraAquaHook()
        batch = completed_job(hook, "zip")["batches"][0]
        target = ObjectStoragePath(f"s3://{s3_bucket.bucket_name}/one/accounts.zip", conn_id="aws_moto")

        result = hook.download_file(batch["fileId"], target, expected_records=15)

        data = s3_bucket.get_object(Bucket=s3_bucket.bucket_name, Key="one/accounts.zip")["Body"].read()
        assert result["uri"] == f"s3://{s3_bucket.bucket_name}/one/accounts.zip"
        assert result["sha256"] == hashlib.sha256(data).hexdigest()


def test_staged_local_file_is_hidden_in_the_same_folder_until_published(tmp_path):
    with StagedFile(resolve_destination(tmp_path / "a.csv")) as staged:
        staged.write(b"Id\n1\n")
        assert staged.path.parent == tmp_path and staged.path.name.startswith(".a.csv.")
        assert listing(tmp_path) == [staged.path.name]
        staged.publish()
    assert listing(tmp_path) == ["a.csv"]
    assert (tmp_path / "a.csv").read_bytes() == b"Id\n1\n"


def assert_manifest_true(folder: Path) -> None:
    """The folder's manifest is absent, or lists exactly the visible files, each with its SHA-256."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.exists():
        return
    manifest = json.loads(manifest_path.read_bytes())
    listed = {Path(entry["uri"]).name: entry["sha256"] for entry in manifest["files"]}
    visible = {path.name for path in folder.iterdir() if not path.name.startswith(".")} - {MANIFEST_NAME}
    assert visible == set(listed), (
        f"manifest of {manifest['job_id']} lists {sorted(listed)}, folder has {sorted(visible)}"
    )
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


class Crash(Exception):
    """A run stopped at a chosen step."""


@pytest.fixture
def watched_steps(monkeypatch: pytest.MonkeyPatch):
    """
    Every step that changes a destination folder (publish a file, remove a file) checks the
    manifest before and after it; ``crash_at`` stops the run at the N-th step, before it runs.
    """
    from airflow_provider_zuora_aqua.results import delivery, destination, staging

    state = {"steps": 0, "crash_at": None, "folder": None}
    publish, remove = staging.StagedFile.publish, destination.remove

    def step(action: Callable[[], None]) -> None:
        state["steps"] += 1
        if state["folder"] is not None:
            assert_manifest_true(state["folder"])
        if state["steps"] == state["crash_at"]:
            raise Crash(f"step {state['steps']}")
        action()
        if state["folder"] is not None:
            assert_manifest_true(state["folder"])

    monkeypatch.setattr(staging.StagedFile, "publish", lambda self: step(lambda: publish(self)))
    monkeypatch.setattr(delivery, "remove", lambda target: step(lambda: remove(target)), raising=False)
    return state


OLDER_FILES = [f"{batch}.part{n}.csv" for batch in ("accounts", "invoices") for n in (1, 2, 3)]


class TestReRunIntoAFolder:
    def two_exports(self, make_sim) -> tuple[ZuoraAquaHook, dict, dict]:
        """An older export of two batches of three segments each; a newer one of accounts alone."""
        make_sim(file_rows=130, segment_rows=50)
        hook = ZuoraAquaHook()
        queries = [ACCOUNTS, {"name": "invoices", "query": "select Id from Invoice"}]
        older = completed_job(hook, "csv", queries, version="1.1", partner="p", project="q")
        newer = completed_job(hook, "csv", [ACCOUNTS])
        return hook, older, newer

    def test_a_successful_re_run_leaves_only_the_new_export(self, make_sim, tmp_path, watched_steps):
        hook, older, newer = self.two_exports(make_sim)
        download_job_results(hook.fetch_file, older, tmp_path)
        assert listing(tmp_path) == [MANIFEST_NAME, *OLDER_FILES]
        watched_steps["folder"] = tmp_path

        download_job_results(hook.fetch_file, newer, tmp_path)

        assert listing(tmp_path) == [MANIFEST_NAME, "accounts.csv"]
        assert json.loads((tmp_path / MANIFEST_NAME).read_bytes())["job_id"] == newer["id"]
        assert_manifest_true(tmp_path)

    def test_a_re_run_stopped_at_any_step_leaves_a_true_manifest_or_none(self, make_sim, tmp_path, watched_steps):
        hook, older, newer = self.two_exports(make_sim)
        watched_steps["folder"] = tmp_path
        download_job_results(hook.fetch_file, older, tmp_path)
        watched_steps["steps"] = 0
        download_job_results(hook.fetch_file, newer, tmp_path)
        # journal, remove the old manifest, publish, remove 6 old files, the manifest, remove the journal
        steps = watched_steps["steps"]
        assert steps == 11

        for crash_at in range(1, steps + 1):
            download_job_results(hook.fetch_file, older, tmp_path)  # the folder holds the older export again
            watched_steps.update(steps=0, crash_at=crash_at)
            with pytest.raises(Crash):
                download_job_results(hook.fetch_file, newer, tmp_path)
            assert_manifest_true(tmp_path)
            watched_steps.update(steps=0, crash_at=None)

        download_job_results(hook.fetch_file, newer, tmp_path)
        assert listing(tmp_path) == [MANIFEST_NAME, "accounts.csv"]

    def test_a_re_run_into_object_storage_replaces_the_older_export(self, make_sim, s3_bucket):
        hook, older, newer = self.two_exports(make_sim)
        bucket = s3_bucket.bucket_name
        destination = f"s3://aws_moto@{bucket}/run/"

        def keys() -> list[str]:
            return sorted(item["Key"] for item in s3_bucket.list_objects_v2(Bucket=bucket).get("Contents", []))

        download_job_results(hook.fetch_file, older, destination)
        assert len(keys()) == 1 + len(OLDER_FILES)
        publish = StagedFile.publish

        def crash_at_the_first_file(staged: StagedFile) -> None:
            if staged.target.name == "accounts.csv":
                raise Crash
            publish(staged)

        with pytest.raises(Crash), mock.patch.object(StagedFile, "publish", crash_at_the_first_file):
            download_job_results(hook.fetch_file, newer, destination)
        # Stopped before its first file: the older files are there, its manifest is not (it would describe
        # files a later step overwrites), and a hidden journal names them all for the next run.
        assert "run/_manifest.json" not in keys() and "run/.aqua-replacing.json" in keys()

        manifest = download_job_results(hook.fetch_file, newer, destination).to_json()

        assert keys() == ["run/_manifest.json", "run/accounts.csv"]
        stored = s3_bucket.get_object(Bucket=bucket, Key="run/accounts.csv")["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == manifest["files"][0]["sha256"]


class TestRefusedBeforeAnyFile:
    @pytest.mark.parametrize("status", ["error", "pending"])
    def test_a_completed_job_with_an_unfinished_batch(self, make_sim, tmp_path, status):
        sim = make_sim(file_rows=20)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv", [ACCOUNTS, {"name": "invoices", "query": "select Id from Invoice"}])
        job["batches"][1]["status"] = status
        sim.clear_requests()

        with pytest.raises(AquaJobFailedError, match=f"'invoices' {status}"):
            download_job_results(hook.fetch_file, job, tmp_path / "out")

        assert sim.requests_for("file") == [] and not (tmp_path / "out").exists()

    def test_a_destination_that_is_an_existing_file(self, make_sim, tmp_path):
        sim = make_sim(file_rows=20)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv")
        (tmp_path / "exports").write_text("not a folder")
        sim.clear_requests()

        for destination in (tmp_path / "exports", tmp_path / "exports" / "2026-12-01"):
            with pytest.raises(AquaConfigurationError, match="is an existing file"):
                download_job_results(hook.fetch_file, job, destination)

        assert sim.requests_for("file") == []

    def test_an_object_storage_destination_that_is_an_object(self, make_sim, s3_bucket):
        sim = make_sim(file_rows=20)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv")
        s3_bucket.put_object(Bucket=s3_bucket.bucket_name, Key="exports", Body=b"x")
        sim.clear_requests()

        with pytest.raises(AquaConfigurationError, match="is an existing object"):
            download_job_results(hook.fetch_file, job, f"s3://aws_moto@{s3_bucket.bucket_name}/exports")

        assert sim.requests_for("file") == []


class TestLeftovers:
    def test_hidden_parts_of_a_killed_run_are_swept_by_the_next(self, make_sim, tmp_path):
        """SIGKILL in the middle of a file leaves its hidden part; the next run into the folder removes it."""
        make_sim(file_rows=500)
        hook = ZuoraAquaHook()
        job = completed_job(hook, "csv")
        script = (
            "import json, sys\n"
            "from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook\n"
            "from airflow_provider_zuora_aqua.results import staging\n"
            "from airflow_provider_zuora_aqua.results.delivery import download_job_results\n"
            "publish = staging.StagedFile.publish\n"
            "def hang(self):\n"
            "    if self.target.name != 'accounts.csv':\n"
            "        return publish(self)\n"
            "    print('staged', flush=True)\n"
            "    sys.stdin.read()\n"
            "staging.StagedFile.publish = hang\n"
            "download_job_results(ZuoraAquaHook().fetch_file, json.loads(sys.argv[1]), sys.argv[2])\n"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(job), str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            while (line := child.stdout.readline()) and line.strip() != "staged":
                pass
            assert line.strip() == "staged"
        finally:
            child.kill()
            child.wait(10)
        part, journal = listing(tmp_path)
        assert journal == ".aqua-replacing.json"
        assert part.startswith(".accounts.csv.") and part.endswith(".part")
        # An old hidden part of another file, a recent one of another file, and a file that is not ours.
        stale = tmp_path / ".orders.csv.0123456789ab.part"
        recent = tmp_path / ".orders.csv.ba9876543210.part"
        foreign = tmp_path / ".accounts.csv.notours.part"
        for path in (stale, recent, foreign):
            path.write_bytes(b"x")
        old = time.time() - 7 * 3600
        os.utime(stale, (old, old))

        download_job_results(hook.fetch_file, job, tmp_path)

        assert listing(tmp_path) == sorted([recent.name, foreign.name, MANIFEST_NAME, "accounts.csv"])

    def test_a_disk_that_fills_on_the_last_buffered_chunk_leaves_no_part(self, tmp_path):
        """The close that flushes the last bytes fails (EFBIG under RLIMIT_FSIZE): the hidden part goes anyway."""
        script = (
            "import resource, signal, sys\n"
            "from airflow_provider_zuora_aqua.results.destination import resolve_destination\n"
            "from airflow_provider_zuora_aqua.results.staging import StagedFile\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "try:\n"
            "    with StagedFile(resolve_destination(sys.argv[1])) as staged:\n"
            "        staged.write(b'Id' + b'x' * 2000)  # held in the file's buffer\n"
            "        staged.publish()\n"
            "except OSError as exc:\n"
            "    print(exc.errno)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "a.csv")], capture_output=True, text=True, timeout=120
        )
        assert done.stdout.strip() == "27", done.stderr  # EFBIG: the flush failed
        assert listing(tmp_path) == []
