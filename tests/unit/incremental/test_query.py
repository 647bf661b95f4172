"""A user's ZOQL narrowed to a window: the user's condition in parentheses, the window binding."""

from __future__ import annotations

from datetime import datetime

import pytest

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.incremental.query import validate_cursor, window_query
from airflow_provider_zuora_aqua.incremental.windows import UTC, Window

WINDOW = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
BOUND = "UpdatedDate >= '2024-01-01T00:00:00+00:00' and UpdatedDate < '2024-01-02T00:00:00+00:00'"


def narrowed(query: str) -> str:
    return window_query(query, "UpdatedDate", WINDOW, name="q")


def test_a_query_without_a_condition_gets_the_window():
    assert narrowed("select Id, Name from Account") == f"select Id, Name from Account where {BOUND}"


def test_the_users_or_is_parenthesised_so_the_window_still_binds():
    query = "select Id from Subscription where Status != 'Expired' or Balance > 0"
    expected = f"select Id from Subscription where (Status != 'Expired' or Balance > 0) and {BOUND}"
    assert narrowed(query) == expected


def test_keywords_inside_quotes_and_parentheses_are_not_clauses():
    query = "SELECT Id FROM Account WHERE Name = 'a where b order by c' AND (Status = 'x' OR Id = 'y')"
    assert narrowed(query) == (
        f"SELECT Id FROM Account where (Name = 'a where b order by c' AND (Status = 'x' OR Id = 'y')) and {BOUND}"
    )


def test_the_window_goes_before_a_trailing_order_by():
    assert narrowed("select Id from Account where Status = 'Active' order by Id") == (
        f"select Id from Account where (Status = 'Active') and {BOUND} order by Id"
    )
    assert narrowed("select Id from Account order by Id") == f"select Id from Account where {BOUND} order by Id"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("select Id from Account where UpdatedDate > '2020-01-01'", "filters on UpdatedDate itself"),
        ("select Id from Account where Name = 'unterminated", "unterminated quote"),
        ("select Id from Account where (Status = 'x'", "unbalanced parentheses"),
        ("select Id from Account where ", "empty 'where'"),
        ("delete from Account", "select"),
        ("select Id", "select"),
    ],
)
def test_queries_that_cannot_be_narrowed_safely_are_refused_naming_the_query(query, message):
    with pytest.raises(AquaConfigurationError, match=message) as raised:
        narrowed(query)
    assert "queries['q']" in str(raised.value)


def test_a_joined_objects_field_of_the_same_name_is_not_the_cursor():
    query = "select Id from Subscription where Account.UpdatedDate > '2020-01-01T00:00:00+00:00'"
    assert narrowed(query).endswith(f"where (Account.UpdatedDate > '2020-01-01T00:00:00+00:00') and {BOUND}")


@pytest.mark.parametrize("cursor", ["", "Updated Date", "x;drop", None, "1abc"])
def test_cursor_must_be_a_field_name(cursor):
    with pytest.raises(AquaConfigurationError, match="cursor"):
        validate_cursor(cursor)


@pytest.mark.parametrize(
    "condition",
    [
        "Account.UpdatedDate > '2020-01-01T00:00:00+00:00'",
        "account.updateddate > '2020-01-01T00:00:00+00:00'",
        "updateddate >= '2020-01-01'",
        "\"UpdatedDate\" > '2020-01-01'",
        "`UpdatedDate` > '2020-01-01'",
        "Account.\"UpdatedDate\" > '2020-01-01'",
        "\"Account.UpdatedDate\" > '2020-01-01'",
        "Status = 'Active' and (Balance > 0 or UpdatedDate < '2020-01-01')",
    ],
)
def test_a_condition_on_the_cursor_is_refused_in_any_spelling(condition):
    with pytest.raises(
        AquaConfigurationError, match=r"queries\['q'\] filters on UpdatedDate itself.*remove that condition"
    ):
        narrowed(f"select Id, Name from Account where {condition}")


@pytest.mark.parametrize(
    "condition",
    [
        "Name = 'UpdatedDate'",  # a string, not a field
        "UpdatedDateNote = 'x'",
        "Account.UpdatedDate > '2020-01-01T00:00:00+00:00'",  # the joined account's, not the subscription's
    ],
)
def test_other_fields_and_strings_are_not_the_cursor(condition):
    assert narrowed(f"select Id from Subscription where {condition}").endswith(f"where ({condition}) and {BOUND}")


def test_the_cursor_may_be_selected_and_ordered_by():
    assert narrowed("select Id, UpdatedDate from Account order by UpdatedDate") == (
        f"select Id, UpdatedDate from Account where {BOUND} order by UpdatedDate"
    )


@pytest.mark.parametrize(
    "query",
    [
        "select Id from Account;",
        "select Id from Account where Status = 'Active' ;  \n",
        "select Id from Account limit 5;",
    ],
)
def test_a_trailing_semicolon_is_refused_with_the_fix(query):
    with pytest.raises(AquaConfigurationError, match=r"queries\['q'\] ends with ';'.*remove the trailing ';'"):
        narrowed(query)


def test_a_semicolon_between_two_statements_is_refused():
    with pytest.raises(AquaConfigurationError, match=r"queries\['q'\] holds a ';'.*one statement"):
        narrowed("select Id from Account; select Id from Invoice")


def test_a_semicolon_inside_a_string_is_data():
    assert narrowed("select Id from Account where Name = 'a;b'") == (
        f"select Id from Account where (Name = 'a;b') and {BOUND}"
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("select Id, Limit from Account", f"select Id, Limit from Account where {BOUND}"),
        (
            "select Id, limit, Name from Account where Status = 'x'",
            f"select Id, limit, Name from Account where (Status = 'x') and {BOUND}",
        ),
        ("select Id from Account where Limit > 5", f"select Id from Account where (Limit > 5) and {BOUND}"),
        ("select Id, Limit from Account limit 10", f"select Id, Limit from Account where {BOUND} limit 10"),
        (
            "select Id from Account where Status = 'x' LIMIT 10",
            f"select Id from Account where (Status = 'x') and {BOUND} LIMIT 10",
        ),
    ],
)
def test_a_field_named_limit_is_a_field_and_the_limit_clause_is_a_clause(query, expected):
    assert narrowed(query) == expected
