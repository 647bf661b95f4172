"""Which route a method and path belong to (with or without a trailing slash)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

UNKNOWN = "unknown"
CONTROL_PREFIX = "/_simulator/"

# Order matters: the partner/project path would also match the job-id pattern.
_ROUTES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = (
    (re.compile(r"/oauth/token/?"), {"POST": "token"}),
    (re.compile(r"/v1/batch-query/?"), {"POST": "submit"}),
    (
        re.compile(r"/v1/batch-query/jobs/partner/(?P<partner>[^/]+)/project/(?P<project>[^/]+)/?"),
        {"GET": "stateful_last_job"},
    ),
    (re.compile(r"/v1/batch-query/jobs/(?P<job_id>[^/]+)/?"), {"GET": "get_job", "DELETE": "delete_job"}),
    (re.compile(r"/v1/files?/(?P<file_id>[^/]+)/?"), {"GET": "file"}),
)


@dataclass(frozen=True)
class RouteMatch:
    """The route of a request; for ``unknown``, ``allowed`` lists the methods the path has."""

    route: str
    params: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()


def match_route(method: str, path: str) -> RouteMatch:
    """Classify a request by method and path (no query string)."""
    for pattern, methods in _ROUTES:
        found = pattern.fullmatch(path)
        if found is None:
            continue
        route = methods.get(method)
        if route is None:
            return RouteMatch(UNKNOWN, allowed=tuple(methods))
        return RouteMatch(route, {name: unquote(value) for name, value in found.groupdict().items()})
    return RouteMatch(UNKNOWN)
