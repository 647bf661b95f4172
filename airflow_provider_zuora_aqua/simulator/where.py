"""Evaluating a parsed ``where`` condition against a table row.

A comparison reads the literal in the type of the row's value:

* a date-time value (``UpdatedDate``, ``CreatedDate``, any ``datetime``): the literal must be a
  date-time literal (quoted or bare), read by :func:`.zoql.parse_datetime_literal` (offset exact,
  no offset in the tenant's zone, fractional seconds truncated). Values are whole seconds, so the
  comparison is at whole seconds. A date alone is its whole day in the tenant's zone, as Zuora
  documents: ``= '2024-01-31'`` is any time that day, ``> '2024-01-31'`` from the next midnight;
* in Export ZOQL, also a relative expression (``'now - 1 day'``, ``'today - 30 days'``,
  :mod:`.relative`), read at submit with the tenant's clock; ``today ...`` is a whole day;
* a date value: the literal must be a date (``2024-01-31``, or ``'today ...'`` in Export ZOQL);
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
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from .relative import DayRange, parse_relative
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


def compile_condition(condition: Condition | None, tenant_zone: tzinfo, now: datetime | None = None) -> Predicate:
    """A predicate for ``condition`` (always true for None); literals are read once, here.

    ``now`` (the tenant's clock) enables Export ZOQL's relative expressions (``'today - 1 day'``,
    :mod:`.relative`); without it they are plain strings, as standard ZOQL has none.
    """
    if condition is None:
        return lambda get: True
    if isinstance(condition, Not):
        inner = compile_condition(condition.operand, tenant_zone, now)
        return lambda get: not inner(get)
    if isinstance(condition, BoolOp):
        operands = [compile_condition(operand, tenant_zone, now) for operand in condition.operands]
        if condition.op == "and":
            return lambda get: all(operand(get) for operand in operands)
        return lambda get: any(operand(get) for operand in operands)
    return _comparison(condition, tenant_zone, now)


def _comparison(comparison: Comparison, tenant_zone: tzinfo, now: datetime | None) -> Predicate:
    field, op, literal = comparison.field, comparison.op, comparison.literal
    if op in ("is", "is not"):
        wanted_null = op == "is"
        return lambda get: (get(field) is None) == wanted_null
    moment = _literal_moment(literal, tenant_zone, now)
    if field.rsplit(".", 1)[-1].lower() in STAMPED_FIELDS and moment is None:
        raise ZoqlValueError(f"{literal.text!r} is not a date-time, which {field} is compared with")
    compare = _ORDERING[op]

    def predicate(get: FieldGetter) -> bool:
        value = get(field)
        if value is None:
            return False
        if isinstance(value, datetime) and isinstance(moment, DayRange):
            return _in_day(value, op, moment)
        return compare(value, _coerce(value, literal, moment, field))

    return predicate


def _literal_moment(literal: Literal, tenant_zone: tzinfo, now: datetime | None) -> datetime | DayRange | None:
    """An instant, a whole day (a date alone, or ``today ...``), or None if the literal is neither."""
    if literal.kind not in ("string", "datetime"):
        return None
    text = str(literal.value)
    if now is not None:
        try:
            relative = parse_relative(text, tenant_zone, now)
        except ValueError as exc:
            raise ZoqlValueError(f"{literal.text!r}: {exc}") from None
        if relative is not None:
            return relative
    day = parse_date_literal(text)
    if day is not None:
        # Zuora: a date alone "include[s] any time within the 24-hour period specified by that date".
        midnight = parse_datetime_literal(text, tenant_zone)
        following = parse_datetime_literal((day + timedelta(days=1)).isoformat(), tenant_zone)
        if midnight is not None and following is not None:
            return DayRange(day, midnight, following)
    return parse_datetime_literal(text, tenant_zone)


def _in_day(value: datetime, op: str, day: DayRange) -> bool:
    """A date-time compared with a whole day: ``=`` is within it, ``>`` after it, ``<`` before it."""
    within = day.start <= value < day.end
    return {
        "=": within,
        "!=": not within,
        "<": value < day.start,
        "<=": value < day.end,
        ">": value >= day.end,
        ">=": value >= day.start,
    }[op]


def _coerce(value: object, literal: Literal, moment: datetime | DayRange | None, field: str) -> object:
    """The literal as a value of ``value``'s type; ZoqlValueError if it cannot be one."""
    if isinstance(value, bool):
        if literal.kind == "boolean":
            return literal.value
        if literal.kind == "string" and str(literal.value).lower() in ("true", "false"):
            return str(literal.value).lower() == "true"
    elif isinstance(value, datetime):
        if isinstance(moment, datetime):
            return moment
    elif isinstance(value, date):
        if isinstance(moment, DayRange):
            return moment.day
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
