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


@pytest.mark.parametrize("segmented_first", [True, False])
def test_final_file_names_are_unique_case_insensitively(segmented_first):
    """A segmented batch ``accounts`` writes accounts.part1.csv: a batch named ``accounts.part1`` must not."""
    segmented = {"name": "accounts", "status": "completed", "segments": ["s1", "s2"]}
    single = {"name": "Accounts.Part1", "status": "completed", "fileId": "f1"}
    manifest_named = {"name": "_manifest.json", "status": "completed", "fileId": "f2"}
    batches = [segmented, single] if segmented_first else [single, segmented]
    job = {"id": "j", "format": "csv", "batches": [*batches, manifest_named]}

    names = [file["name"] for batch in plan_files(job) for file in batch["files"]]

    assert len({name.lower() for name in names}) == len(names) == 4
    assert "_manifest.json" not in names
    expected = (
        ["accounts.part1.csv", "accounts.part2.csv", "Accounts.Part1-2.csv"]
        if segmented_first
        else ["Accounts.Part1.csv", "accounts-2.part1.csv", "accounts-2.part2.csv"]
    )
    assert names[:3] == expected
