"""Evaluating a parsed ``where`` condition against a table row.

A comparison reads the literal in the type of the row's value:

* a date-time value (``UpdatedDate``, ``CreatedDate``, any ``datetime``): the literal must be a
  date-time literal (quoted or bare), read by :func:`.zoql.parse_datetime_literal` (offset exact,
  no offset in the tenant's zone, fractional seconds truncated). Values are whole seconds, so the
  comparison is at whole seconds;
* a date value: the literal must be a date (``2024-01-31``);
* a number: a number, or a string holding one;
* a boolean: ``true``/``false``, quoted or not;
* a string: the literal as written (case-sensitive comparison).

A null value matches only ``is null`` (``= null``); every other comparison with it is false, as
in SQL, so ``Status != 'Expired'`` does not match a row without a Status. A literal that cannot
be read as the value's type raises :class:`ZoqlValueError`; comparisons on ``UpdatedDate`` and
``CreatedDate`` are checked up front, so a bad cursor bound is refused even on an empty table.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import date, datetime, tzinfo
from typing import Any

from .zoql import BoolOp, Comparison, Condition, Literal, Not, parse_date_literal, parse_datetime_literal

#: Looks a field (as written in the query) up in one row; None when the row has no value.
FieldGetter = Callable[[str], object]
Predicate = Callable[[FieldGetter], bool]

STAMPED_FIELDS = ("updateddate", "createddate")
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class ZoqlValueError(ValueError):
    """A literal that cannot be compared with the field's values."""


def compile_condition(condition: Condition | None, tenant_zone: tzinfo) -> Predicate:
    """A predicate for ``condition`` (always true for None); literals are read once, here."""
    if condition is None:
        return lambda get: True
    if isinstance(condition, Not):
        inner = compile_condition(condition.operand, tenant_zone)
        return lambda get: not inner(get)
    if isinstance(condition, BoolOp):
        operands = [compile_condition(operand, tenant_zone) for operand in condition.operands]
        if condition.op == "and":
            return lambda get: all(operand(get) for operand in operands)
        return lambda get: any(operand(get) for operand in operands)
    return _comparison(condition, tenant_zone)


def _comparison(comparison: Comparison, tenant_zone: tzinfo) -> Predicate:
    field, op, literal = comparison.field, comparison.op, comparison.literal
    if op in ("is", "is not"):
        wanted_null = op == "is"
        return lambda get: (get(field) is None) == wanted_null
    instant = _literal_instant(literal, tenant_zone)
    if field.rsplit(".", 1)[-1].lower() in STAMPED_FIELDS and instant is None:
        raise ZoqlValueError(f"{literal.text!r} is not a date-time, which {field} is compared with")
    compare = _ORDERING[op]

    def predicate(get: FieldGetter) -> bool:
        value = get(field)
        if value is None:
            return False
        return compare(value, _coerce(value, literal, instant, field))

    return predicate


def _literal_instant(literal: Literal, tenant_zone: tzinfo) -> datetime | None:
    if literal.kind not in ("string", "datetime"):
        return None
    return parse_datetime_literal(str(literal.value), tenant_zone)


def _coerce(value: object, literal: Literal, instant: datetime | None, field: str) -> object:
    """The literal as a value of ``value``'s type; ZoqlValueError if it cannot be one."""
    if isinstance(value, bool):
        if literal.kind == "boolean":
            return literal.value
        if literal.kind == "string" and str(literal.value).lower() in ("true", "false"):
            return str(literal.value).lower() == "true"
    elif isinstance(value, datetime):
        if instant is not None:
            return instant
    elif isinstance(value, date):
        day = parse_date_literal(str(literal.value)) if literal.kind in ("string", "datetime") else None
        if day is not None:
            return day
    elif isinstance(value, (int, float)):
        if literal.kind == "number":
            return literal.value
        if literal.kind == "string":
            try:
                return float(str(literal.value))
            except ValueError:
                pass
    elif isinstance(value, str):
        return literal.value if literal.kind == "string" else literal.text
    raise ZoqlValueError(f"cannot compare {field} ({type(value).__name__}) with {literal.text!r}")
