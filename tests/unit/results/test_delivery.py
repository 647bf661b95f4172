"""Delivery of a job's files: names, batches and segments."""

from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.results.delivery import plan_files, safe_file_stem


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
