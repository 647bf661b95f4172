"""The subset of ZOQL the simulator accepts: ``select <fields> from <Object> [where <condition>]``.

A real tokenizer and a recursive-descent parser, so that what Zuora refuses is refused here
too (an unterminated quote, a dangling ``and``, junk after the statement) and what it accepts
is read with the right precedence.

Grammar (keywords case-insensitive)::

    statement  := SELECT field ("," field)* FROM identifier [WHERE condition]
    field      := identifier ("." identifier)*
    condition  := conjunct (OR conjunct)*           -- OR binds loosest
    conjunct   := negation (AND negation)*
    negation   := NOT negation | "(" condition ")" | comparison
    comparison := field op literal | field IS [NOT] NULL
    op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    literal    := 'string' | number | true | false | null | datetime

So ``a or b and c`` is ``a or (b and c)``, and a user's ``(x or y)`` joined to a window's
``and``s keeps the window binding. Strings are single-quoted; a backslash escapes the next
character (``'O\\'Reilly'``), as in ZOQL. ``= null`` / ``!= null`` mean ``is null`` / ``is not
null`` (ZOQL's own spelling). Anything else (``*``, functions, ``order by``, ``limit``, a
``;``) is a syntax error.

Date-time literals, quoted or bare: ``2024-01-01``, ``2024-01-01T10:00:00``,
``2024-01-01 10:00:00.750``, each optionally followed by an offset (``Z``, ``+02:00``,
``-0800``). :func:`parse_datetime_literal` reads one:

* with an offset it is exact;
* without one it is read in the **tenant's time zone** (``America/Los_Angeles`` by default,
  like many Zuora tenants), so a client that omits the offset is visibly off by hours. A local
  time that a daylight-saving change skips or repeats takes the first reading (``fold=0``);
* a date alone is midnight, in the tenant's zone;
* fractional seconds are **truncated** to the whole second: Zuora stores and compares
  date-times at whole seconds, so ``UpdatedDate < '...:00.999Z'`` is ``< '...:00Z'``. Two
  half-open windows that meet at a fractional instant therefore still tile: after truncation
  both name the same second, and a row is in exactly one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DATE = r"\d{4}-\d{2}-\d{2}"
_DATETIME = re.compile(
    rf"(?P<date>{_DATE})"
    r"(?:[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?)?"
    r"(?P<offset>Z|z|[+-]\d{2}(?::?\d{2})?)?"
)
# A bare date-time token: the space-separated form needs quotes (a space ends a token).
_BARE_DATETIME = re.compile(
    rf"{_DATE}(?:T\d{{2}}:\d{{2}}(?::\d{{2}}(?:\.\d+)?)?)?(?:Z|z|[+-]\d{{2}}(?::?\d{{2}})?)?(?![A-Za-z0-9_.:])"
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?![A-Za-z0-9_.])")
_OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">")
_PUNCTUATION = "(),."
_KEYWORDS = {"select", "from", "where", "and", "or", "not", "is", "null", "true", "false"}


class ZoqlSyntaxError(ValueError):
    """The query is not a statement the simulator accepts."""


# Tokens


@dataclass(frozen=True)
class Token:
    """One token: ``kind`` is ident, keyword, string, number, datetime, op, punct or end."""

    kind: str
    text: str
    position: int
    value: object = None


def tokenize(query: str) -> list[Token]:
    """Split ``query`` into tokens (ending with an ``end`` token); raise on anything unknown."""
    tokens: list[Token] = []
    position, length = 0, len(query)
    while position < length:
        char = query[position]
        if char.isspace():
            position += 1
            continue
        if char == "'":
            text, position = _string(query, position)
            tokens.append(Token("string", text, position, text))
            continue
        token = _bare_token(query, position)
        if token is None:
            raise ZoqlSyntaxError(f"unexpected character {char!r} at position {position + 1}")
        tokens.append(token)
        position += len(token.text)
    tokens.append(Token("end", "", length))
    return tokens


def _string(query: str, start: int) -> tuple[str, int]:
    chars: list[str] = []
    position = start + 1
    while position < len(query):
        char = query[position]
        if char == "\\" and position + 1 < len(query):
            chars.append(query[position + 1])
            position += 2
            continue
        if char == "'":
            return "".join(chars), position + 1
        chars.append(char)
        position += 1
    raise ZoqlSyntaxError(f"unterminated string literal starting at position {start + 1}")


def _bare_token(query: str, position: int) -> Token | None:
    for pattern, kind in ((_BARE_DATETIME, "datetime"), (_NUMBER, "number")):
        found = pattern.match(query, position)
        if found:
            return Token(kind, found.group(), position, found.group())
    found = _IDENTIFIER.match(query, position)
    if found:
        word = found.group()
        kind = "keyword" if word.lower() in _KEYWORDS else "ident"
        return Token(kind, word, position, word.lower() if kind == "keyword" else word)
    for operator in _OPERATORS:
        if query.startswith(operator, position):
            return Token("op", operator, position, operator)
    if query[position] in _PUNCTUATION:
        return Token("punct", query[position], position, query[position])
    return None


# Syntax tree


@dataclass(frozen=True)
class Literal:
    """A literal as written: ``kind`` is string, number, boolean, null or datetime."""

    kind: str
    text: str
    value: object


@dataclass(frozen=True)
class Comparison:
    """``field op literal``; ``is null`` is ``op="is"`` and ``is not null`` ``op="is not"``."""

    field: str
    op: str
    literal: Literal


@dataclass(frozen=True)
class Not:
    """``not operand``."""

    operand: Condition


@dataclass(frozen=True)
class BoolOp:
    """``and`` / ``or`` of two or more operands, in order."""

    op: str
    operands: tuple[Condition, ...]


Condition = Comparison | Not | BoolOp


@dataclass(frozen=True)
class ParsedQuery:
    """A parsed ``select``: the fields as written, the object, the raw where text and its tree."""

    fields: tuple[str, ...]
    object_name: str
    where: str | None
    condition: Condition | None = None


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.current
        self.index += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        return self.current.kind == "keyword" and self.current.value in words

    def expect_keyword(self, word: str) -> Token:
        if not self.at_keyword(word):
            raise self.error(f"expected '{word}'")
        return self.advance()

    def error(self, message: str) -> ZoqlSyntaxError:
        token = self.current
        found = "the end of the query" if token.kind == "end" else repr(token.text)
        return ZoqlSyntaxError(f"{message} at position {token.position + 1}, found {found}")

    def statement(self) -> ParsedQuery:
        self.expect_keyword("select")
        fields = [self.field("in the select list")]
        while self.current.text == "," and self.current.kind == "punct":
            self.advance()
            fields.append(self.field("in the select list"))
        self.expect_keyword("from")
        if self.current.kind != "ident":
            raise self.error("expected an object name after 'from'")
        object_name = self.advance().text
        where: str | None = None
        condition: Condition | None = None
        if self.at_keyword("where"):
            self.advance()
            if self.current.kind == "end":
                raise self.error("expected a condition after 'where'")
            where = self.query[self.current.position :].strip()
            condition = self.condition()
        if self.current.kind != "end":
            raise self.error("unexpected text after the statement")
        return ParsedQuery(tuple(fields), object_name, where, condition)

    def field(self, where: str) -> str:
        if self.current.kind != "ident":
            raise self.error(f"expected a field name {where}")
        parts = [self.advance().text]
        while self.current.kind == "punct" and self.current.text == ".":
            self.advance()
            if self.current.kind != "ident":
                raise self.error("expected a field name after '.'")
            parts.append(self.advance().text)
        return ".".join(parts)

    def condition(self) -> Condition:
        operands = [self.conjunct()]
        while self.at_keyword("or"):
            self.advance()
            operands.append(self.conjunct())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def conjunct(self) -> Condition:
        operands = [self.negation()]
        while self.at_keyword("and"):
            self.advance()
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def negation(self) -> Condition:
        if self.at_keyword("not"):
            self.advance()
            return Not(self.negation())
        if self.current.kind == "punct" and self.current.text == "(":
            self.advance()
            inner = self.condition()
            if not (self.current.kind == "punct" and self.current.text == ")"):
                raise self.error("expected ')'")
            self.advance()
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        field = self.field("in the condition")
        if self.at_keyword("is"):
            self.advance()
            negated = self.at_keyword("not")
            if negated:
                self.advance()
            self.expect_keyword("null")
            return Comparison(field, "is not" if negated else "is", Literal("null", "null", None))
        if self.current.kind != "op":
            raise self.error(f"expected a comparison operator after {field!r}")
        op = self.advance().text
        literal = self.literal()
        if literal.kind == "null":
            if op not in ("=", "!=", "<>"):
                raise self.error(f"'{op}' cannot compare with null")
            return Comparison(field, "is" if op == "=" else "is not", literal)
        return Comparison(field, "!=" if op == "<>" else op, literal)

    def literal(self) -> Literal:
        token = self.current
        if token.kind in ("string", "datetime"):
            self.advance()
            return Literal(token.kind, token.text, token.value)
        if token.kind == "number":
            self.advance()
            text = token.text
            return Literal("number", text, float(text) if "." in text else int(text))
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            self.advance()
            if token.value == "null":
                return Literal("null", token.text, None)
            return Literal("boolean", token.text, token.value == "true")
        raise self.error("expected a value (a quoted string, a number, true, false, null or a date-time)")


def referenced_objects(parsed: ParsedQuery) -> set[str]:
    """The objects a query touches: the queried one and each joined one (``Account.Name``)."""
    fields = list(parsed.fields)
    pending: list[Condition] = [] if parsed.condition is None else [parsed.condition]
    while pending:
        condition = pending.pop()
        if isinstance(condition, Comparison):
            fields.append(condition.field)
        elif isinstance(condition, Not):
            pending.append(condition.operand)
        else:
            pending.extend(condition.operands)
    return {parsed.object_name} | {field.split(".")[0] for field in fields if "." in field}


def parse_zoql(query: str) -> ParsedQuery:
    """Parse ``query`` or raise :class:`ZoqlSyntaxError` naming what is wrong and where."""
    return _Parser(query).statement()


# Date-time literals


def parse_datetime_literal(text: str, tenant_zone: tzinfo) -> datetime | None:
    """The UTC instant (whole seconds) a date-time literal names; None if ``text`` is not one.

    Without an offset the literal is local time in ``tenant_zone``; fractional seconds are
    truncated. See the module docstring.
    """
    found = _DATETIME.fullmatch(text.strip())
    if found is None:
        return None
    try:
        day = date.fromisoformat(found.group("date"))
        local = datetime(
            day.year,
            day.month,
            day.day,
            int(found.group("hour") or 0),
            int(found.group("minute") or 0),
            int(found.group("second") or 0),
        )
    except ValueError:
        return None
    offset = found.group("offset")
    zone = tenant_zone if offset is None else _offset_zone(offset)
    if zone is None:
        return None
    return local.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)


def _offset_zone(offset: str) -> tzinfo | None:
    if offset in ("Z", "z"):
        return timezone.utc
    digits = offset[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if offset[0] == "-" else delta)


def parse_date_literal(text: str) -> date | None:
    """A date-only literal (``2024-01-31``) as a date; None if it is not one."""
    try:
        return date.fromisoformat(text.strip()) if re.fullmatch(_DATE, text.strip()) else None
    except ValueError:
        return None
