"""
A user's ZOQL ``select`` narrowed to one window on its cursor.

The user's own condition is kept and put in parentheses, so an ``or`` inside it cannot loosen
the window: ``select ... from Account where (Status = 'Active' or Balance > 0) and UpdatedDate
>= '...' and UpdatedDate < '...'``. Only the parts of ZOQL that decide where the condition
goes are read here (quotes, parentheses, ``where``, trailing ``order by`` / ``group by`` /
``limit``); Zuora checks the rest.
"""

from __future__ import annotations

import re

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.incremental.windows import Window, iso

_TOKEN = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[A-Za-z_][A-Za-z0-9_.]*|\s+|.", re.DOTALL)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Clauses that follow the condition: the window's bound goes before them.
_TAIL_KEYWORDS = {("order", "by"), ("group", "by"), ("limit",)}


def validate_cursor(cursor: object) -> str:
    """The cursor column's name: a plain ZOQL field name such as ``UpdatedDate``."""
    if not isinstance(cursor, str) or not _IDENTIFIER.fullmatch(cursor):
        raise AquaConfigurationError(f"cursor must be a field name such as 'UpdatedDate', not {cursor!r}")
    return cursor


def window_query(query: str, cursor: str, window: Window, *, name: str) -> str:
    """
    ``query`` with its condition, if any, in parentheses and the window's bounds added.

    :param name: the query's name, for errors.
    :raises AquaConfigurationError: not a ``select ... from ...``, an unterminated quote or
        parenthesis, or a condition on the cursor itself (the window is the operator's).
    """
    tokens = _tokens(query, name)
    words = [(index, token.lower()) for index, token in enumerate(tokens) if _IDENTIFIER.fullmatch(token)]
    if not words or words[0][1] != "select" or "from" not in {word for _, word in words}:
        raise AquaConfigurationError(f"queries[{name!r}] must be a ZOQL 'select <fields> from <Object>', not {query!r}")
    where, tail = _top_level(tokens, "where"), _tail_start(tokens)
    head_end = where if where is not None else tail
    condition = "".join(tokens[where + 1 : tail]).strip() if where is not None else ""
    if where is not None and not condition:
        raise AquaConfigurationError(f"queries[{name!r}] has an empty 'where'")
    if any(token.lower() == cursor.lower() for token in tokens[head_end:tail] if _IDENTIFIER.fullmatch(token)):
        raise AquaConfigurationError(
            f"queries[{name!r}] filters on {cursor} itself; the operator adds the window on {cursor}: "
            "remove that condition"
        )
    bound = f"{cursor} >= '{iso(window.start)}' and {cursor} < '{iso(window.end)}'"
    narrowed = f"({condition}) and {bound}" if condition else bound
    rest = "".join(tokens[tail:]).strip()
    return f"{''.join(tokens[:head_end]).rstrip()} where {narrowed}" + (f" {rest}" if rest else "")


def _tokens(query: str, name: str) -> list[str]:
    tokens = _TOKEN.findall(query)
    depth = 0
    for token in tokens:
        if token in ("'", '"'):
            raise AquaConfigurationError(f"queries[{name!r}] has an unterminated quote: {query!r}")
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth < 0:
            break
    if depth:
        raise AquaConfigurationError(f"queries[{name!r}] has unbalanced parentheses: {query!r}")
    return tokens


def _top_level(tokens: list[str], keyword: str) -> int | None:
    """Index of the first ``keyword`` outside parentheses and quotes."""
    depth = 0
    for index, token in enumerate(tokens):
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth == 0 and token.lower() == keyword:
            return index
    return None


def _tail_start(tokens: list[str]) -> int:
    """Index where a trailing ``order by`` / ``group by`` / ``limit`` starts (or the end)."""
    depth = 0
    words = [(index, token.lower()) for index, token in enumerate(tokens) if not token.isspace()]
    for position, (index, word) in enumerate(words):
        depth += {"(": 1, ")": -1}.get(word, 0)
        following = words[position + 1][1] if position + 1 < len(words) else None
        if depth == 0 and ((word, following) in _TAIL_KEYWORDS or (word,) in _TAIL_KEYWORDS):
            return index
    return len(tokens)
