"""Destinations and the staged file: where a result lands, and how."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_zuora_aqua.exceptions import (
    AquaConfigurationError,
)
from airflow_provider_zuora_aqua.results.destination import (
    Destination,
    lineage_dataset_name,
    path_conn_id,
    resolve_destination,
)
from airflow_provider_zuora_aqua.results.staging import StagedFile


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
