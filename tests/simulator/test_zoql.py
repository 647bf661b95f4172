"""The ZOQL tokenizer and parser: precedence, literals, and what must be refused."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_zuora_aqua.simulator.zoql import (
    BoolOp,
    Comparison,
    Literal,
    Not,
    ZoqlSyntaxError,
    parse_datetime_literal,
    parse_zoql,
)

LOS_ANGELES = ZoneInfo("America/Los_Angeles")
UTC = timezone.utc


def _where(condition: str) -> object:
    return parse_zoql(f"select Id from Account where {condition}").condition


def _shape(node: object) -> object:
    """A compact form of a condition tree: ('or', [...]), ('not', x) or the field name."""
    if isinstance(node, BoolOp):
        return (node.op, [_shape(operand) for operand in node.operands])
    if isinstance(node, Not):
        return ("not", _shape(node.operand))
    assert isinstance(node, Comparison)
    return node.field


@pytest.mark.parametrize(
    ("condition", "shape"),
    [
        ("a = 1 or b = 2 and c = 3", ("or", ["a", ("and", ["b", "c"])])),
        ("a = 1 and b = 2 or c = 3", ("or", [("and", ["a", "b"]), "c"])),
        ("(a = 1 or b = 2) and c = 3", ("and", [("or", ["a", "b"]), "c"])),
        ("not a = 1 and b = 2", ("and", [("not", "a"), "b"])),
        ("not (a = 1 or b = 2)", ("not", ("or", ["a", "b"]))),
        ("a = 1 OR b = 2 Or c = 3", ("or", ["a", "b", "c"])),
        ("((a = 1))", "a"),
    ],
)
def test_precedence(condition: str, shape: object) -> None:
    assert _shape(_where(condition)) == shape


def test_a_users_or_stays_inside_the_windows_ands() -> None:
    query = (
        "select Id, Name, UpdatedDate from Account where (Status != 'Expired' or Balance > 0)"
        " and UpdatedDate >= '2024-01-01T00:00:00Z' and UpdatedDate < '2024-01-02T00:00:00Z'"
    )
    parsed = parse_zoql(query)
    assert _shape(parsed.condition) == ("and", [("or", ["Status", "Balance"]), "UpdatedDate", "UpdatedDate"])
    assert parsed.where is not None and parsed.where.startswith("(Status")


def test_literals() -> None:
    condition = _where(
        "a = 'it\\'s' and b = -1.5 and c = 42 and d = TRUE and e = false and f = 2024-01-01T00:00:00Z and g != null"
    )
    assert isinstance(condition, BoolOp)
    literals = [operand.literal for operand in condition.operands if isinstance(operand, Comparison)]
    assert literals[:6] == [
        Literal("string", "it's", "it's"),
        Literal("number", "-1.5", -1.5),
        Literal("number", "42", 42),
        Literal("boolean", "TRUE", True),
        Literal("boolean", "false", False),
        Literal("datetime", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
    ]
    last = condition.operands[-1]
    assert isinstance(last, Comparison) and last.op == "is not"


def test_null_spellings() -> None:
    assert _where("a is null") == _where("a = null")
    assert _where("a is not null") == _where("a != null") == _where("a <> null")


def test_keywords_and_fields_are_case_insensitive_and_dotted_fields_parse() -> None:
    parsed = parse_zoql("SeLeCt id, Account.Name\nFROM Invoice WHERE Account.Status = 'x'")
    assert parsed.fields == ("id", "Account.Name") and parsed.object_name == "Invoice"


@pytest.mark.parametrize(
    "query",
    [
        "select Id from Account where Name = 'unterminated",
        "select Id from Account where Name = 'ends with an escaped quote\\'",
        "select Id from Account where UpdatedDate >= '2024-01-01T00:00:00Z",
        "select Id from Account where (a = 1",
        "select Id from Account where a = 1)",
        "select Id from Account where a = 1 and",
        "select Id from Account where a == 1",
        "select Id from Account where a = ",
        "select Id from Account where = 1",
        "select Id from Account where a < null",
        "select Id from Account where a is 1",
        'select Id from Account where Name = "double"',
        "select Id from Account where a = 1 junk",
        "select Id from Account order by Id",
        "select Id from Account limit 10",
        "select Id from Account;",
        "select count(Id) from Account",
        "select Id, from Account",
        "select Id from Account.Name",
        "select Id from Account where a = 1 # comment",
    ],
)
def test_refused(query: str) -> None:
    with pytest.raises(ZoqlSyntaxError):
        parse_zoql(query)


def test_unterminated_quote_says_so() -> None:
    with pytest.raises(ZoqlSyntaxError, match="unterminated string literal starting at position 37"):
        parse_zoql("select Id from Account where Name = 'x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T02:00:00+02:00", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2023-12-31T16:00:00-0800", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01 00:00:00+00", datetime(2024, 1, 1, tzinfo=UTC)),
        # No offset: the tenant's zone (PST in winter, PDT in summer): visibly off for a UTC client.
        ("2024-01-01T00:00:00", datetime(2024, 1, 1, 8, tzinfo=UTC)),
        ("2024-07-01T00:00:00", datetime(2024, 7, 1, 7, tzinfo=UTC)),
        ("2024-01-01", datetime(2024, 1, 1, 8, tzinfo=UTC)),
        ("2024-01-01T10:30", datetime(2024, 1, 1, 18, 30, tzinfo=UTC)),
        # Whole seconds: the fraction is truncated, never rounded up.
        ("2024-01-01T00:00:00.999Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:59.5+00:00", datetime(2024, 1, 1, 0, 0, 59, tzinfo=UTC)),
        # A local time the spring-forward skips takes the first reading (fold=0, PST).
        ("2024-03-10T02:30:00", datetime(2024, 3, 10, 10, 30, tzinfo=UTC)),
        # A repeated local hour at the fall-back: the first (PDT) reading.
        ("2024-11-03T01:30:00", datetime(2024, 11, 3, 8, 30, tzinfo=UTC)),
    ],
)
def test_datetime_literals(text: str, expected: datetime) -> None:
    assert parse_datetime_literal(text, LOS_ANGELES) == expected


@pytest.mark.parametrize("text", ["2024-02-30", "2024-01-01T25:00:00Z", "2024-01-01T00:00:00+24:00", "yesterday", ""])
def test_invalid_datetime_literals(text: str) -> None:
    assert parse_datetime_literal(text, LOS_ANGELES) is None


def test_tenant_zone_is_a_parameter() -> None:
    assert parse_datetime_literal("2024-01-01T00:00:00", ZoneInfo("Europe/Berlin")) == datetime(
        2023, 12, 31, 23, tzinfo=UTC
    )
