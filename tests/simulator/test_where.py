"""Where conditions evaluated on a tenant's rows: whole seconds, tiling, nulls, types."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_zuora_aqua.simulator.tenant import Tenant
from airflow_provider_zuora_aqua.simulator.where import ZoqlValueError
from airflow_provider_zuora_aqua.simulator.zoql import parse_zoql

UTC = timezone.utc
START = datetime(2024, 1, 1, tzinfo=UTC)


def _ids(tenant: Tenant, query: str) -> list[str]:
    exported = tenant.export(parse_zoql(query), date_time_utc=True)
    assert exported is not None
    return [row[0] or "" for row in exported.rows]


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def seconds() -> Tenant:
    """Account rows A000..A119, one per second from START."""
    tenant = Tenant()
    tenant.insert_many(
        "Account", [{"Id": f"A{i:03d}", "UpdatedDate": START + timedelta(seconds=i)} for i in range(120)]
    )
    return tenant


def test_windows_at_half_second_bounds_tile(seconds: Tenant) -> None:
    # Bounds at .5 s truncate to the second before: consecutive half-open windows share that
    # second as one's end and the next one's start, so every row is in exactly one window.
    bounds = [START - timedelta(seconds=0.5) + timedelta(seconds=7.5 * k) for k in range(18)]
    seen: list[str] = []
    for start, end in zip(bounds, bounds[1:]):
        seen += _ids(
            seconds,
            f"select Id from Account where UpdatedDate >= '{_stamp(start)}' and UpdatedDate < '{_stamp(end)}'",
        )
    assert sorted(seen) == [f"A{i:03d}" for i in range(120)]


def test_two_windows_meeting_inside_a_second_never_share_a_row(seconds: Tenant) -> None:
    first = (
        "select Id from Account where UpdatedDate >= '2024-01-01T00:00:00Z' and UpdatedDate < '2024-01-01T00:00:10.5Z'"
    )
    second = (
        "select Id from Account where UpdatedDate >= '2024-01-01T00:00:10.5Z' and UpdatedDate < '2024-01-01T00:00:20Z'"
    )
    assert _ids(seconds, first)[-1] == "A009"  # 10.5 is read as 10: the row at :10 is not in it ...
    assert _ids(seconds, second)[0] == "A010"  # ... it is in the next window, once


def test_inclusive_upper_bound_doubles_the_boundary_row(seconds: Tenant) -> None:
    first = (
        "select Id from Account where UpdatedDate >= '2024-01-01T00:00:00Z' and UpdatedDate <= '2024-01-01T00:00:10Z'"
    )
    second = (
        "select Id from Account where UpdatedDate >= '2024-01-01T00:00:10Z' and UpdatedDate <= '2024-01-01T00:00:20Z'"
    )
    assert set(_ids(seconds, first)) & set(_ids(seconds, second)) == {"A010"}


def test_offsetless_literal_is_read_in_the_tenant_zone(seconds: Tenant) -> None:
    window = "select Id from Account where UpdatedDate >= '{}' and UpdatedDate < '{}'"
    assert len(_ids(seconds, window.format("2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"))) == 60
    # A UTC client that forgets the offset asks for 08:00Z to 08:01Z in Los Angeles' winter.
    assert _ids(seconds, window.format("2024-01-01T00:00:00", "2024-01-01T00:01:00")) == []
    assert len(_ids(seconds, window.format("2023-12-31T16:00:00", "2023-12-31T16:01:00"))) == 60


def test_date_only_literal_is_midnight_in_the_tenant_zone(seconds: Tenant) -> None:
    assert _ids(seconds, "select Id from Account where UpdatedDate >= '2024-01-01'") == []
    assert len(_ids(seconds, "select Id from Account where UpdatedDate >= '2023-12-31'")) == 120


def test_a_users_or_does_not_escape_the_window() -> None:
    tenant = Tenant()
    tenant.insert_many(
        "Account",
        [
            {"Id": "in-active", "Status": "Active", "Balance": 0, "UpdatedDate": START},
            {"Id": "in-expired-owing", "Status": "Expired", "Balance": 5, "UpdatedDate": START},
            {"Id": "in-expired-paid", "Status": "Expired", "Balance": 0, "UpdatedDate": START},
            {"Id": "out-active", "Status": "Active", "Balance": 9, "UpdatedDate": START + timedelta(days=1)},
            {"Id": "before-owing", "Status": "Expired", "Balance": 9, "UpdatedDate": START - timedelta(seconds=1)},
        ],
    )
    query = (
        "select Id from Account where (Status != 'Expired' or Balance > 0)"
        " and UpdatedDate >= '2024-01-01T00:00:00Z' and UpdatedDate < '2024-01-02T00:00:00Z'"
    )
    assert _ids(tenant, query) == ["in-active", "in-expired-owing"]
    # Without the parentheses, 'or' binds loosest and the window binds only the second branch.
    loose = query.replace("(", "").replace(")", "")
    assert _ids(tenant, loose) == ["in-active", "in-expired-owing", "out-active"]


def test_nulls_match_only_is_null() -> None:
    tenant = Tenant()
    tenant.insert_many("Account", [{"Id": "with", "Status": "Active"}, {"Id": "without", "Status": None}])
    assert _ids(tenant, "select Id from Account where Status != 'Expired'") == ["with"]
    assert _ids(tenant, "select Id from Account where Status is null") == ["without"]
    assert _ids(tenant, "select Id from Account where Status = null") == ["without"]
    assert _ids(tenant, "select Id from Account where not Status = 'Active'") == ["without"]
    assert _ids(tenant, "select Id from Account where Missing is null") == ["with", "without"]


def test_types_numbers_booleans_dates_and_case_insensitive_fields() -> None:
    tenant = Tenant()
    tenant.insert_many(
        "Account",
        [
            {"Id": "a", "Balance": 10.5, "AutoPay": True, "BillCycleDay": 3, "LastInvoiceDate": date(2024, 1, 31)},
            {"Id": "b", "Balance": -1, "AutoPay": False, "BillCycleDay": 20, "LastInvoiceDate": date(2024, 2, 1)},
        ],
    )
    assert _ids(tenant, "select Id from Account where balance > 0") == ["a"]
    assert _ids(tenant, "select Id from Account where Balance >= '-1' and Balance < 0") == ["b"]
    assert _ids(tenant, "select Id from Account where AutoPay = true") == ["a"]
    assert _ids(tenant, "select Id from Account where AutoPay = 'false'") == ["b"]
    assert _ids(tenant, "select Id from Account where LastInvoiceDate >= '2024-02-01'") == ["b"]
    assert _ids(tenant, "select Id from Account where Account.Id = 'a'") == ["a"]
    assert _ids(tenant, "select Id from Account where Id = 'A'") == []  # values compare case-sensitively


@pytest.mark.parametrize(
    "condition",
    ["UpdatedDate >= 'yesterday'", "UpdatedDate < 42", "CreatedDate = true", "UpdatedDate > '{{ ds }}'"],
)
def test_a_cursor_bound_that_is_no_date_time_is_refused_even_on_an_empty_table(condition: str) -> None:
    tenant = Tenant()
    tenant.create_table("Account")
    with pytest.raises(ZoqlValueError):
        tenant.export(parse_zoql(f"select Id from Account where {condition}"), date_time_utc=False)


def test_a_literal_of_the_wrong_type_is_refused() -> None:
    tenant = Tenant()
    tenant.insert("Account", {"Id": "a", "Balance": 1})
    with pytest.raises(ZoqlValueError, match="Balance"):
        tenant.export(parse_zoql("select Id from Account where Balance > 'lots'"), date_time_utc=False)
