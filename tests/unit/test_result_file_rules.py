"""The rules around a download, without a server: destinations, names, answers, resumes, lineage."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import ObjectStoragePath
from airflow_provider_zuora_aqua.results import receiver as file_download

from airflow_provider_zuora_aqua.client.wire import HttpAnswer
from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaConfigurationError,
    AquaFileAccessDeniedError,
    AquaFileNotFoundError,
    AquaFileTooLargeError,
    AquaIntegrityError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.results.delivery import plan_files, safe_file_stem
from airflow_provider_zuora_aqua.results.lineage import job_queries, outlet_extra, query_objects, zuora_namespace
from airflow_provider_zuora_aqua.results.receiver import FileReceiver, download_headers, file_error
from airflow_provider_zuora_aqua.results.staging import (
    Destination,
    StagedFile,
    lineage_dataset_name,
    path_conn_id,
    resolve_destination,
)

FILE_ID = "2c92c0f86a8dd422016a9e7a70116b0d"


class TestDestinations:
    def test_local_paths_and_file_uris(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert resolve_destination("out/x").local == tmp_path / "out" / "x"
        assert resolve_destination(tmp_path / "y").local == tmp_path / "y"
        assert resolve_destination("file:///data/a%20b/c.csv").local == Path("/data/a b/c.csv")
        assert resolve_destination("file://localhost/data/c.csv").local == Path("/data/c.csv")
        assert resolve_destination(ObjectStoragePath("file:///data/z")).local == Path("/data/z")
        assert resolve_destination("/data/a b").uri == "file:///data/a%20b"

    def test_object_storage_uris_keep_the_connection(self):
        destination = resolve_destination("s3://bucket/prefix/", "aws_exports")
        assert destination.local is None
        assert path_conn_id(destination.remote) == "aws_exports"
        assert destination.uri == "s3://bucket/prefix"
        assert path_conn_id(resolve_destination("s3://aws_exports@bucket/key").remote) == "aws_exports"
        assert resolve_destination("s3://aws_exports@bucket/key").uri == "s3://bucket/key"
        child = destination.child("accounts.csv")
        assert (child.uri, path_conn_id(child.remote)) == ("s3://bucket/prefix/accounts.csv", "aws_exports")
        path = ObjectStoragePath("s3://bucket/k")
        assert path_conn_id(resolve_destination(path, "aws_exports").remote) == "aws_exports"

    @pytest.mark.parametrize("destination", [None, "", "  ", "None", 42])
    def test_nothing_to_write_to_is_refused(self, destination):
        with pytest.raises(AquaConfigurationError, match="is not a destination"):
            resolve_destination(destination)

    def test_remote_file_uri_and_two_connections_are_refused(self):
        with pytest.raises(AquaConfigurationError, match="must be local"):
            resolve_destination("file://otherhost/data")
        with pytest.raises(AquaConfigurationError, match="set only one of them"):
            resolve_destination(ObjectStoragePath("s3://bucket/k", conn_id="a"), "b")

    @pytest.mark.parametrize(
        ("uri", "name"),
        [
            ("file:///data/a%20b/x.csv", ("file", "/data/a b/x.csv")),
            ("s3://bucket/zuora/x.csv.gz", ("s3://bucket", "zuora/x.csv.gz")),
            ("gs://bucket/x.zip", ("gs://bucket", "x.zip")),
            ("abfs://container@account.dfs.core.windows.net/x", ("abfs://container@account.dfs.core.windows.net", "x")),
            ("sftp://host:22/srv/x.csv", ("sftp://host:22", "/srv/x.csv")),
        ],
    )
    def test_openlineage_names(self, uri, name):
        assert lineage_dataset_name(uri) == name

    def test_a_folder_is_not_a_file_destination(self, tmp_path):
        with pytest.raises(AquaConfigurationError, match="is a folder: give the path of the file"):
            StagedFile(resolve_destination(tmp_path))

    def test_a_failed_upload_is_aborted_not_committed(self, tmp_path):
        class Sink:
            def __init__(self) -> None:
                self.calls: list[str] = []

            def write(self, data: bytes) -> None:
                raise OSError("connection reset")

            def discard(self) -> None:
                self.calls.append("discard")

            def close(self) -> None:
                self.calls.append("close")

        sink = Sink()
        remote = SimpleNamespace(open=lambda mode: sink)
        staged = StagedFile(Destination(remote=remote))
        staged.write(b"Id\n1\n")
        with pytest.raises(OSError, match="connection reset"), staged:
            staged.publish()
        assert sink.calls == ["discard"]
        assert not staged.path.exists()

    def test_discarded_staged_file_leaves_nothing(self, tmp_path):
        with StagedFile(resolve_destination(tmp_path / "sub" / "a.csv")) as staged:
            staged.write(b"partial")
        assert list((tmp_path / "sub").iterdir()) == []


class TestNames:
    @pytest.mark.parametrize(
        ("name", "stem"),
        [
            ("accounts", "accounts"),
            ("../../x", "x"),
            ("/etc/passwd", "etc_passwd"),
            ("..", "batch4"),
            ("", "batch4"),
            (None, "batch4"),
            (".hidden", "hidden"),
            ("Rechnungen März 2026", "Rechnungen_M_rz_2026"),
            ("a\\b\x00c", "a_b_c"),
            ("x" * 300, "x" * 100),
        ],
    )
    def test_safe_file_stem(self, name, stem):
        assert safe_file_stem(name, 4) == stem

    def test_plan_skips_unfinished_batches_and_dedupes_case_insensitively(self):
        job = {
            "id": "j",
            "format": "GZIP",
            "batches": [
                {"name": "Accounts", "status": "completed", "fileId": "f1", "recordCount": 3},
                {"name": "accounts", "status": "completed", "segments": ["s1", "s2"], "recordCount": "7"},
                {"name": "late", "status": "cancelled", "recordCount": 0},
            ],
        }
        assert plan_files(job) == [
            {"batch": "Accounts", "expected": 3, "files": [{"file_id": "f1", "name": "Accounts.csv.gz"}]},
            {
                "batch": "accounts",
                "expected": 7,
                "files": [
                    {"file_id": "s1", "name": "accounts-2.part1.csv.gz", "segment": 1},
                    {"file_id": "s2", "name": "accounts-2.part2.csv.gz", "segment": 2},
                ],
            },
        ]

    def test_unknown_format_is_refused(self):
        with pytest.raises(Exception, match="result format 'parquet'"):
            plan_files({"id": "j", "format": "parquet", "batches": []})


class TestAnswers:
    def answer(self, status: int, body: bytes, **headers: str) -> HttpAnswer:
        return HttpAnswer(status, {"Zuora-Request-Id": "req-1", **headers}, body)

    def test_404_says_purged_or_never_existed(self):
        error = file_error(self.answer(404, b'{"message": "nope"}'), FILE_ID)
        assert isinstance(error, AquaFileNotFoundError) and isinstance(error, AquaApiError)
        assert FILE_ID in str(error) and "72 hours" in str(error) and "Zuora-Request-Id req-1" in str(error)

    def test_403_size_cap_and_permission(self):
        cap = file_error(self.answer(403, b"<security:max-object-size>2047MB</security:max-object-size>"), FILE_ID)
        assert isinstance(cap, AquaFileTooLargeError) and FILE_ID in str(cap) and "UpdatedDate" in str(cap)
        denied = file_error(self.answer(403, b'{"message": "Forbidden"}'), FILE_ID)
        assert isinstance(denied, AquaFileAccessDeniedError) and FILE_ID in str(denied)

    def test_other_answers_keep_the_provider_rules(self):
        assert isinstance(file_error(self.answer(503, b""), FILE_ID), AquaServerError)
        limited = file_error(self.answer(429, b"", **{"Retry-After": "3"}), FILE_ID)
        assert isinstance(limited, AquaRateLimitError) and limited.retry_after == 3
        body = b'{"success": false, "reasons": [{"code": 50000040, "message": "bad"}]}'
        assert "bad" in str(file_error(self.answer(200, body), FILE_ID))
        not_a_file = file_error(self.answer(200, b'{"file": "x"}'), FILE_ID)
        assert type(not_a_file) is AquaApiError and "JSON instead of the file" in str(not_a_file)

    def test_resumed_requests_ask_for_a_range_of_the_identity_encoding(self):
        assert download_headers({"Accept-Encoding": "gzip", "Authorization": "x"}, 0)["Accept-Encoding"] == "gzip"
        resumed = download_headers({"Accept-Encoding": "gzip"}, 1024)
        assert (resumed["Range"], resumed["Accept-Encoding"], resumed["Accept"]) == ("bytes=1024-", "identity", "*/*")


class TestReceiver:
    @pytest.fixture
    def receiver(self, tmp_path):
        with StagedFile(resolve_destination(tmp_path / "a.csv")) as staged:
            yield FileReceiver(FILE_ID, staged, "csv")

    def test_a_200_after_a_range_request_starts_over(self, receiver):
        receiver.write(b"Id\nstale-")
        receiver.begin(200, {}, receiver.resume_offset)
        receiver.write(b"Id\n1\n2\n")
        assert receiver.finish(2)["bytes"] == 7

    @pytest.mark.parametrize(
        "headers",
        [
            {"Content-Range": "bytes 0-9/10"},
            {"Content-Range": "bytes 3-9/10", "Content-Encoding": "gzip"},
            {},
        ],
    )
    def test_a_206_that_does_not_continue_is_retried_from_zero(self, receiver, headers):
        receiver.write(b"Id\n")
        with pytest.raises(AquaTransportError, match="does not continue the file at byte 3"):
            receiver.begin(206, headers, 3)
        assert receiver.resume_offset == 0

    def test_a_resumed_answer_must_reach_the_full_size(self, receiver):
        receiver.write(b"Id\n")
        receiver.begin(206, {"Content-Range": "bytes 3-9/10"}, 3)
        receiver.write(b"1\n")
        with pytest.raises(AquaTransportError, match="ended at byte 5 of 10"):
            receiver.end()
        assert receiver.resume_offset == 5

    def test_more_than_any_aqua_file_is_refused(self, receiver, monkeypatch):
        monkeypatch.setattr(file_download, "MAX_FILE_BYTES", 10)
        receiver.write(b"Id\n1\n2\n3\n")
        with pytest.raises(AquaIntegrityError, match="is over 10 bytes"):
            receiver.write(b"4\n")

    def test_bytes_of_another_format_are_refused(self, receiver):
        with pytest.raises(AquaIntegrityError, match="should be csv .* but its bytes are gzip"):
            receiver.write(b"\x1f\x8b\x08\x00rest")


class TestLineage:
    def test_query_objects(self):
        queries = [
            "select Id from Account",
            "SELECT a.Id FROM   Invoice where Name = 'from Payment'",
            "select Id from account",
            'select Id from Subscription where x = "from Usage"',
            "select Id from Account",
            None,
        ]
        assert query_objects(queries) == ["Account", "Invoice", "account", "Subscription"]

    def test_namespace_extra_and_job_queries(self):
        assert zuora_namespace("https://rest.test.zuora.com") == "zuora://rest.test.zuora.com"
        assert job_queries({"batches": [{"query": "select Id from A"}, {"name": "x"}]}) == ["select Id from A"]
        files = [{"uri": "file:///a", "records": 2}, {"uri": "s3://b/c", "records": 3}]
        assert outlet_extra("job-1", files) == {
            "aqua_job_id": "job-1",
            "files": ["file:///a", "s3://b/c"],
            "records": 5,
        }


@pytest.mark.parametrize("segments", ["abc", {"a": 1}, [1, 2]])
def test_segments_that_are_not_a_list_of_file_ids_are_refused(segments):
    from airflow_provider_zuora_aqua.exceptions import AquaError
    from airflow_provider_zuora_aqua.results.delivery import plan_files

    job = {"id": "j", "format": "csv", "batches": [{"name": "a", "status": "completed", "segments": segments}]}
    with pytest.raises(AquaError, match="not a list of file ids"):
        plan_files(job)


def test_batches_that_are_not_objects_are_skipped():
    from airflow_provider_zuora_aqua.results.delivery import plan_files

    assert plan_files({"id": "j", "format": "csv", "batches": {"a": 1}}) == []
    assert plan_files({"id": "j", "format": "csv", "batches": ["a", "b"]}) == []
