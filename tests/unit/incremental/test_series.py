from __future__ import annotations

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.incremental.series import Series, check_same_series

DELETED = {"column": "IsDeleted", "format": "Boolean", "forceExport": True}


def series(query: str = "select Id from Account", **kwargs) -> Series:
    arguments = {"cursor": "UpdatedDate", "deleted": None, "file_format": "csv", **kwargs}
    return Series.of(query, **arguments)


def test_whitespace_outside_quotes_does_not_change_the_series():
    assert series("select Id,\n   Name from Account ") == series("select Id, Name from Account")
    assert series("select Id from Account where Name = 'a  b'") != series("select Id from Account where Name = 'a b'")
    assert series("select Id from Account where Name = 'it\\'s  x'") != series(
        "select Id from Account where Name = 'it\\'s x'"
    )


@pytest.mark.parametrize(
    "other",
    [
        series("select Id from Account where Name = 'Acme'"),
        series(cursor="CreatedDate"),
        series(deleted=DELETED),
        series(file_format="gzip"),
    ],
)
def test_a_change_of_query_cursor_deleted_or_format_is_another_series(other):
    assert other != series() and other.fingerprint != series().fingerprint
    with pytest.raises(AquaConfigurationError) as refused:
        check_same_series(series(), other, query_name="Account", folder_uri="file:///exports/Account")
    message = str(refused.value)
    assert "queries['Account']" in message and series().describe() in message and other.describe() in message
    assert "another destination" in message and "another name" in message
    assert "remove file:///exports/Account" in message


def test_the_manifest_round_trip_keeps_the_series():
    held = series(deleted=DELETED)
    assert Series.from_manifest({"series": held.to_json()}) == held
    assert held.to_json()["fingerprint"] == held.fingerprint
    assert Series.from_manifest({}) is None  # written before manifests recorded it
