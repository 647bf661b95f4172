"""The subset of ZOQL the simulator accepts: ``select <fields> from <Object> [where ...]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_FIELD = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*")
_STATEMENT = re.compile(
    rf"\s*select\s+(?P<fields>.+?)\s+from\s+(?P<object>{_IDENTIFIER})"
    rf"(?:\s+where\s+(?P<where>\S.*?))?\s*",
    re.IGNORECASE | re.DOTALL,
)


class ZoqlSyntaxError(ValueError):
    """The query is not a statement the simulator accepts."""


@dataclass(frozen=True)
class ParsedQuery:
    """A parsed ``select``: the fields as written, the object, and the raw where clause."""

    fields: tuple[str, ...]
    object_name: str
    where: str | None


def parse_zoql(query: str) -> ParsedQuery:
    """Parse ``query`` or raise :class:`ZoqlSyntaxError` naming what is wrong."""
    match = _STATEMENT.fullmatch(query)
    if match is None:
        raise ZoqlSyntaxError("expected 'select <fields> from <Object> [where <condition>]'")
    fields = tuple(part.strip() for part in match.group("fields").split(","))
    for field in fields:
        if not _FIELD.fullmatch(field):
            raise ZoqlSyntaxError(f"invalid field {field!r} in the select list")
    return ParsedQuery(fields=fields, object_name=match.group("object"), where=match.group("where"))
