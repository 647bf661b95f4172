"""The watermark's source: window manifests under the destination, checked against their folders."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError
from airflow_provider_zuora_aqua.incremental.ledger import (
    published_windows,
    validate_query_name,
    validate_query_names,
    window_folder,
)
from airflow_provider_zuora_aqua.incremental.windows import UTC, Window
from airflow_provider_zuora_aqua.results.destination import resolve_destination


def window(day: int) -> Window:
    return Window(datetime(2024, 1, day, tzinfo=UTC), datetime(2024, 1, day + 1, tzinfo=UTC))


def publish(root: Path, query: str, window_: Window, **overrides: object) -> Path:
    folder = window_folder(resolve_destination(root), query, window_).local
    folder.mkdir(parents=True)
    manifest = {"query": query, "window": window_.to_json("UpdatedDate"), "files": [], **overrides}
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    return folder


def test_windows_with_a_manifest_count_and_half_written_ones_do_not(tmp_path: Path):
    publish(tmp_path, "Account", window(2))
    publish(tmp_path, "Account", window(1))
    half = window_folder(resolve_destination(tmp_path), "Account", window(3)).local
    half.mkdir(parents=True)
    (half / "Account.csv").write_text("Id\n1\n")  # killed before its manifest
    publish(tmp_path, "Subscription", window(5))
    (tmp_path / "Account" / "notes").mkdir()  # not a window folder: ignored

    assert published_windows(resolve_destination(tmp_path), "Account", "UpdatedDate") == [window(1), window(2)]
    assert published_windows(resolve_destination(tmp_path), "Invoice", "UpdatedDate") == []


def test_a_manifest_that_contradicts_its_folder_is_refused(tmp_path: Path):
    folder = publish(tmp_path, "Account", window(1))
    folder.rename(folder.with_name(window(2).slug))
    with pytest.raises(AquaIntegrityError, match="not what its folder says"):
        published_windows(resolve_destination(tmp_path), "Account", "UpdatedDate")


def test_another_cursor_is_refused_with_the_fix(tmp_path: Path):
    publish(tmp_path, "Account", window(1))
    with pytest.raises(AquaConfigurationError, match="new destination"):
        published_windows(resolve_destination(tmp_path), "Account", "CreatedDate")


@pytest.mark.parametrize("content", ["not json", "[1, 2]", json.dumps({"query": "Account", "window": "x"})])
def test_a_manifest_that_is_not_ours_is_refused(tmp_path: Path, content: str):
    folder = publish(tmp_path, "Account", window(1))
    (folder / "_manifest.json").write_text(content)
    with pytest.raises(AquaIntegrityError):
        published_windows(resolve_destination(tmp_path), "Account", "UpdatedDate")


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b", "x" * 101, None, "Sub scription"])
def test_query_names_must_be_plain_folder_names(name):
    with pytest.raises(AquaConfigurationError, match="queries"):
        validate_query_name(name)


def test_ordinary_query_names_pass():
    assert validate_query_name("Account") == "Account"
    assert validate_query_name("invoice_items.v2") == "invoice_items.v2"


def test_a_window_of_a_year_before_1000_is_read_back_from_its_folder(tmp_path: Path):
    early = Window(datetime(999, 1, 1, tzinfo=UTC), datetime(999, 1, 2, tzinfo=UTC))
    publish(tmp_path, "Account", early)
    assert published_windows(resolve_destination(tmp_path), "Account", "UpdatedDate") == [early]


def test_query_names_are_checked_one_by_one_and_returned_in_order():
    assert validate_query_names(["Account", "Invoice", "Invoice_Item"]) == ["Account", "Invoice", "Invoice_Item"]
    with pytest.raises(AquaConfigurationError, match="'bad name'"):
        validate_query_names(["Account", "bad name"])


@pytest.mark.parametrize(
    "names", [["Account", "account"], ["Invoice", "Account", "INVOICE"], ["Invoice.v2", "INVOICE.V2"]]
)
def test_names_equal_ignoring_case_are_refused_naming_both(names: list[str]):
    expected = r"queries: the names .* differ only in case.*rename one"
    with pytest.raises(AquaConfigurationError, match=expected) as raised:
        validate_query_names(names)
    colliding = [name for name in names if name.casefold() == names[-1].casefold()]
    assert all(repr(name) in str(raised.value) for name in colliding)
