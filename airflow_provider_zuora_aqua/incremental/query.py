"""
A user's ZOQL ``select`` narrowed to one window on its cursor.

The user's own condition is kept and put in parentheses, so an ``or`` inside it cannot loosen
the window: ``select ... from Account where (Status = 'Active' or Balance > 0) and UpdatedDate
>= '...' and UpdatedDate < '...'``. Only the parts of ZOQL that decide where the condition
goes are read here (quotes, parentheses, ``from``, ``where``, trailing ``order by`` /
``group by`` / ``limit <n>``, ``;``); Zuora checks the rest.

Zuora's Export ZOQL: https://docs.zuora.com/en/zuora-platform/data/legacy-query-methods/export-zoql/export-zoql-select-statements
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.incremental.windows import Window, iso

# Strings ('...'), quoted names ("..." and `...`), names (dotted), numbers, spaces, one character.
_TOKEN = re.compile(
    r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|[A-Za-z_][A-Za-z0-9_.]*|\d+|\s+|.",
    re.DOTALL,
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
#: Two-word clauses that follow the condition: the window's bound goes before them.
_TAIL_CLAUSES = {("order", "by"), ("group", "by")}


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
        parenthesis, a ``;``, or a condition on the cursor itself in any spelling (the window is
        the operator's).
    """
    tokens = _tokens(query, name)
    words = [token.lower() for token in tokens if _NAME.fullmatch(token)]
    source = _top_level(tokens, "from")
    if not words or words[0] != "select" or source is None:
        raise AquaConfigurationError(f"queries[{name!r}] must be a ZOQL 'select <fields> from <Object>', not {query!r}")
    where = _top_level(tokens, "where", begin=source)
    tail = _tail_start(tokens, begin=source if where is None else where)
    head_end = where if where is not None else tail
    condition = "".join(tokens[where + 1 : tail]).strip() if where is not None else ""
    if where is not None and not condition:
        raise AquaConfigurationError(f"queries[{name!r}] has an empty 'where'")
    data_source = next((token for token in tokens[source + 1 :] if not token.isspace()), "")
    if where is not None and _filters_on(tokens[where + 1 : tail], cursor, data_source):
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
    for index, token in enumerate(tokens):
        if token in ("'", '"', "`"):
            raise AquaConfigurationError(f"queries[{name!r}] has an unterminated quote: {query!r}")
        if token == ";":
            # AQuA runs each query as one statement and fails one that ends with ";".
            if all(rest.isspace() for rest in tokens[index + 1 :]):
                raise AquaConfigurationError(f"queries[{name!r}] ends with ';': remove the trailing ';'")
            raise AquaConfigurationError(
                f"queries[{name!r}] holds a ';': a query is one statement; remove the ';' and give each "
                "statement its own query"
            )
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth < 0:
            break
    if depth:
        raise AquaConfigurationError(f"queries[{name!r}] has unbalanced parentheses: {query!r}")
    return tokens


def _top_level(tokens: list[str], keyword: str, begin: int = 0) -> int | None:
    """Index of the first ``keyword`` from ``begin`` on, outside parentheses and quotes."""
    depth = 0
    for index, token in enumerate(tokens):
        depth += {"(": 1, ")": -1}.get(token, 0)
        if index >= begin and depth == 0 and token.lower() == keyword:
            return index
    return None


def _tail_start(tokens: list[str], begin: int) -> int:
    """
    Index where a trailing ``order by`` / ``group by`` / ``limit <n>`` starts after ``begin``
    (or the end). ``limit`` is the clause only when a number follows: ``select Id, Limit from
    ...`` and ``where Limit > 5`` name a field called Limit.
    """
    depth = 0
    words = [(index, token.lower()) for index, token in enumerate(tokens) if not token.isspace()]
    for position, (index, word) in enumerate(words):
        depth += {"(": 1, ")": -1}.get(word, 0)
        following = words[position + 1][1] if position + 1 < len(words) else ""
        clause = (word, following) in _TAIL_CLAUSES or (word == "limit" and following.isdigit())
        if index > begin and depth == 0 and clause:
            return index
    return len(tokens)


def _filters_on(condition: list[str], cursor: str, data_source: str) -> bool:
    """
    Whether ``condition`` names the cursor field of the data source: ``UpdatedDate``,
    ``Account.UpdatedDate`` on ``from Account``, quoted (``"UpdatedDate"``, `` `UpdatedDate` ``)
    or not, in any case. A joined object's field of the same name (``Account.UpdatedDate`` on
    ``from Subscription``) is another field and a string (``'UpdatedDate'``) no field at all.
    """
    owners = {"", data_source.lower()}
    for path in _field_paths(condition):
        *owner, field = (part.lower() for part in path)
        if field == cursor.lower() and ".".join(owner) in owners:
            return True
    return False


def _field_paths(tokens: list[str]) -> Iterator[list[str]]:
    """The field references among ``tokens``, each as its dotted parts with quotes removed."""
    path: list[str] = []
    continues = False  # the path ends with "." and the next name belongs to it
    for token in tokens:
        if token == ".":
            continues = bool(path)
            continue
        quoted = len(token) >= 2 and token[0] == token[-1] and token[0] in '"`'
        if not quoted and not _NAME.fullmatch(token):
            if path:
                yield path
            path, continues = [], False
            continue
        parts = [part for part in (token[1:-1] if quoted else token).split(".") if part]
        if not continues and path:
            yield path
            path = []
        path += parts
        continues = not quoted and token.endswith(".")
    if path:
        yield path
