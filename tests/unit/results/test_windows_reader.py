"""Reading announced windows and their files, the merge SQL, and the per-window asset events."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sqlite3
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError
from airflow_provider_zuora_aqua.results.lineage import (
    query_folder_uri,
    record_window_events,
    window_asset,
    window_asset_of,
)
from airflow_provider_zuora_aqua.results.windows_reader import (
    MergeTable,
    announced_windows,
    iter_records,
    placeholder_of,
    read_window,
    utc_text,
    windows_in_events,
)

CSV = (
    b"Id,Name,UpdatedDate,IsDeleted\r\n"
    b'A1,"Acme, Inc.",2024-01-01T10:00:00+0000,false\r\n'
    b'A2,"two\r\nlines",2024-01-01T11:00:00+0000,true\r\n'
)


def window(tmp_path: Path, data: bytes = CSV, file_format: str = "csv", **entry: Any) -> str:
    folder = tmp_path / "Account" / "20240101T000000Z_20240102T000000Z"
    folder.mkdir(parents=True)
    name = {"csv": "Account.csv", "gzip": "Account.csv.gz", "zip": "Account.zip"}[file_format]
    (folder / name).write_bytes(data)
    files = [
        {
            "batch": "Account",
            "uri": (folder / name).as_uri(),
            "format": file_format,
            "records": 2,
            "sha256": hashlib.sha256(data).hexdigest(),
            **entry,
        }
    ]
    window_json = {"cursor": "UpdatedDate", "start": "2024-01-01T00:00:00+00:00", "end": "2024-01-02T00:00:00+00:00"}
    manifest = {"query": "Account", "window": window_json, "job_id": "j1", "files": files}
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    return (folder / "_manifest.json").as_uri()


def announced(manifest: str, start: str = "2024-01-01", query: str = "Account") -> dict[str, Any]:
    return {"query": query, "window": {"start": start}, "manifest": manifest, "records": 1, "job_id": "j"}


class TestReading:
    @pytest.mark.parametrize("file_format", ["csv", "gzip", "zip"])
    def test_records_of_each_format_with_quoted_commas_and_line_breaks(self, tmp_path, file_format):
        data = CSV
        if file_format == "gzip":
            data = gzip.compress(CSV)
        elif file_format == "zip":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("Account.csv", CSV)
            data = buffer.getvalue()
        published = read_window(window(tmp_path, data, file_format))
        assert published.query == "Account" and published.records == 2 and len(published.sha256) == 64
        records = list(iter_records(published))
        assert [r["Name"] for r in records] == ["Acme, Inc.", "two\r\nlines"]
        assert records[1]["IsDeleted"] == "true"

    def test_a_file_that_differs_from_its_manifest_is_refused(self, tmp_path):
        with pytest.raises(AquaIntegrityError, match="SHA-256"):
            list(iter_records(read_window(window(tmp_path, sha256="0" * 64))))
        other = tmp_path / "other"
        with pytest.raises(AquaIntegrityError, match="holds 2 records, its manifest says 3"):
            list(iter_records(read_window(window(other, records=3))))

    def test_a_file_that_is_not_a_manifest_is_refused(self, tmp_path):
        (tmp_path / "m.json").write_text('{"files": []}')
        with pytest.raises(AquaIntegrityError, match="no query"):
            read_window((tmp_path / "m.json").as_uri())

    def test_utc_text_of_zuora_date_times(self):
        assert utc_text("2024-01-31T10:00:00+0000") == "2024-01-31T10:00:00Z"
        assert utc_text("2024-01-31T10:00:00-08:00") == "2024-01-31T18:00:00Z"
        assert utc_text("2024-01-31T10:00:00Z") == "2024-01-31T10:00:00Z"
        with pytest.raises(AquaIntegrityError):
            utc_text("yesterday")


class ByAsset(dict):
    """Events by asset, as Airflow's accessors give them: Airflow 3.0's ``Asset`` is not hashable."""

    def __init__(self, pairs: list) -> None:
        super().__init__((self._key(asset), value) for asset, value in pairs)

    @staticmethod
    def _key(asset: Any) -> str:
        return getattr(asset, "uri", None) or asset.name

    def __getitem__(self, asset: Any) -> Any:
        return super().__getitem__(self._key(asset))

    def get(self, asset: Any, default: Any = None) -> Any:
        return super().get(self._key(asset), default)


class TestEvents:
    def test_both_event_shapes_each_window_once_oldest_first(self):
        per_window = [SimpleNamespace(extra=announced("m2", "2024-01-02")), {"extra": announced("m1", "2024-01-01")}]
        summary = [
            SimpleNamespace(extra={"windows": [announced("m2", "2024-01-02"), announced("s1", "2024-01-01", "Sub")]})
        ]
        assert [w["manifest"] for w in windows_in_events(per_window, summary)] == ["m1", "s1", "m2"]
        assert [w["manifest"] for w in windows_in_events(per_window, summary, query="Sub")] == ["s1"]
        assert windows_in_events([SimpleNamespace(extra={"records": 0}), SimpleNamespace(extra=None)]) == []

    def test_announced_windows_reads_the_inlet_events_since_the_earliest_triggering_one(self):
        asset = Asset("file:///x/Account")
        early, late = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc)
        triggering = ByAsset(
            [
                (
                    asset,
                    [
                        SimpleNamespace(extra=announced("m2", "2"), timestamp=late),
                        SimpleNamespace(extra=announced("m1", "1"), timestamp=early),
                    ],
                )
            ]
        )
        asked = []

        class Inlet:
            def after(self, moment):
                asked.append(moment)
                return [SimpleNamespace(extra=announced("m3", "3"))]

        windows = announced_windows(asset, triggering, ByAsset([(asset, Inlet())]))
        assert asked == [early] and [w["manifest"] for w in windows] == ["m1", "m2", "m3"]
        assert announced_windows(asset, ByAsset([]), ByAsset([(asset, Inlet())])) == []

    def test_record_window_events_one_event_per_window_on_the_query_asset(self, tmp_path):
        alias, plain = AssetAlias("windows"), Asset("zuora-summary")
        extras: dict[Any, dict] = {}
        added: list[tuple[Any, dict]] = []

        class Accessor:
            def __init__(self, key):
                self.extra = extras.setdefault(ByAsset._key(key), {})

            def add(self, asset, extra=None):
                added.append((asset, extra))

        events = ByAsset([(plain, Accessor(plain)), (alias, Accessor(alias))])
        first, second = (tmp_path / "Account" / slug / "_manifest.json" for slug in ("w1", "w2"))
        windows = [announced(first.as_uri()), {**announced(second.as_uri()), "records": 4}]
        record_window_events({"outlet_events": events}, [plain, alias], windows)

        assert extras[ByAsset._key(plain)] == {"windows": windows, "records": 5}  # the run's event, as before
        assert extras[ByAsset._key(alias)] == {}
        assert [extra for _, extra in added] == windows
        assert {asset.uri for asset, _ in added} == {window_asset(tmp_path, "Account").uri}
        assert window_asset(tmp_path, "Account").uri == window_asset_of(first.as_uri()).uri
        assert query_folder_uri(first.as_uri()) == (tmp_path / "Account").as_uri()
        record_window_events({}, [alias], windows)  # no outlet events: nothing to do


class TestMergeTable:
    def test_names_and_columns_are_checked(self):
        with pytest.raises(AquaConfigurationError):
            MergeTable('x"; drop', columns=["Id", "UpdatedDate"])
        with pytest.raises(AquaConfigurationError, match="key"):
            MergeTable("t", columns=["Name", "UpdatedDate"])

    def test_upsert_keeps_the_newer_version(self):
        table = MergeTable("t", columns=["Id", "Name", "UpdatedDate"])
        sql = table.upsert_sql("?")
        assert sql.endswith('WHERE excluded."UpdatedDate" >= "t"."UpdatedDate"')
        conn = sqlite3.connect(":memory:")
        for statement in table.ddl():
            conn.execute(statement)
        conn.execute(sql, ("A", "new", "2024-01-02T00:00:00Z", 0))
        conn.execute(sql, ("A", "old", "2024-01-01T00:00:00Z", 0))
        conn.execute(sql, ("A", "same second, loaded later", "2024-01-02T00:00:00Z", 0))
        assert conn.execute('SELECT "Name" FROM t').fetchall() == [("same second, loaded later",)]

    def test_placeholder_of_the_driver(self):
        assert placeholder_of(sqlite3.connect(":memory:")) == "?"
        assert placeholder_of(object()) == "?"
