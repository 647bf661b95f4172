"""Build and check the body of an AQuA submit (``POST /v1/batch-query/``) before anything is sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaConfigurationError,
    AquaServerError,
    AquaSubmitInProgressError,
)

#: Result formats of a job, as its ``format`` names them (and its result files come in).
CSV, ZIP, GZIP = "csv", "zip", "gzip"
FORMATS = (CSV, ZIP, GZIP)
VERSIONS = ("1.0", "1.1")
QUERY_TYPES = ("zoqlexport", "zoql")
MAX_QUERIES = 50
MAX_JOB_NAME_LENGTH = 32
#: Refusals of a keyed submit that Zuora processed, besides error bodies: it keeps them under the key.
KEPT_UNDER_THE_KEY = (400, 422)


def submit_refused(exc: BaseException, *, key_may_name_a_job: bool = False) -> bool:
    """
    Whether a submit that raised ``exc`` created no job, so its ``Idempotency-Key`` is spent: it
    was refused before sending, or Zuora answered it with a refusal (a ZOQL error, a ``4xx``, the
    tenant's job limit as error ``90028`` or ``429``). Zuora keeps a key's first answer, a refusal
    included, for 24 hours and replays it: a spent key is never sent again. A lost or transient
    answer (transport error, ``5xx``, ``409`` in progress) may hide a job: its key is kept to find it.

    With ``key_may_name_a_job`` (an earlier send of the key got no answer, or the key is the
    recorded submit of a try that died), only an answer Zuora processed and keeps under the key
    proves that the key made no job: an error body (AQuA answers ``200`` with one, as ``90028``),
    ``400`` (the request itself is invalid) or ``422`` (the key was used with another body).
    ``401``, ``403``, ``404`` and ``429`` can come before Zuora looks at the key (a gateway, the
    rate limiter): the key is kept, to be sent again, and finds the job if its first send made it.
    """
    if isinstance(exc, AquaConfigurationError):
        return True
    if not isinstance(exc, AquaApiError) or isinstance(exc, (AquaServerError, AquaSubmitInProgressError)):
        return False
    if not key_may_name_a_job:
        return True
    status = exc.status_code
    if status is None:  # an error body whose status was not kept
        return exc.error_code is not None
    return 200 <= status < 300 or status in KEPT_UNDER_THE_KEY


def query_names(body: Mapping[str, Any] | None) -> list[str] | None:
    """The names of the queries of a submit body (None: no body, or one of another shape)."""
    queries = body.get("queries") if isinstance(body, Mapping) else None
    if not isinstance(queries, list) or not all(isinstance(query, Mapping) for query in queries):
        return None
    return [str(query.get("name")) for query in queries]


def build_job_request(
    *,
    queries: Sequence[Mapping[str, Any]] | Mapping[str, str],
    job_name: str | None,
    format: str,
    version: str,
    partner: str | None,
    project: str | None,
    use_query_labels: bool | None,
    date_time_utc: bool | None,
    job_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """
    Return the submit body; an invalid argument raises :class:`AquaConfigurationError` naming it.

    ``queries`` is either a list of query dicts as AQuA takes them (``name``, ``query``,
    ``type``, ``apiVersion``, ...) or, for the common case, a mapping of name → ZOQL.
    """
    normalized_format = str(format).lower()
    if normalized_format not in FORMATS:
        raise _error("format", f"{format!r} is not supported; use one of {', '.join(FORMATS)}")
    version = str(version)
    if version not in VERSIONS:
        raise _error("version", f"{version!r} is not supported; use '1.0' (stateless) or '1.1' (stateful)")
    if version == "1.1" and not (partner and project):
        raise _error("partner/project", "a stateful job (version '1.1') needs both partner and project")
    if job_name is not None and len(job_name) > MAX_JOB_NAME_LENGTH:
        raise _error("job_name", f"{job_name!r} has {len(job_name)} characters; AQuA allows {MAX_JOB_NAME_LENGTH}")

    body: dict[str, Any] = {
        "format": normalized_format,
        "version": version,
        "encrypted": "none",
        "queries": _normalize_queries(queries),
    }
    optional = {
        "name": job_name,
        "partner": partner if version == "1.1" else None,
        "project": project if version == "1.1" else None,
        "useQueryLabels": use_query_labels,
        "dateTimeUtc": date_time_utc,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    for key, value in (job_options or {}).items():
        if key in body:
            raise _error("job_options", f"{key!r} has its own argument; set it there")
        body[key] = value
    return body


def _normalize_queries(queries: Sequence[Mapping[str, Any]] | Mapping[str, str]) -> list[dict[str, Any]]:
    if isinstance(queries, Mapping):
        items = [{"name": name, "query": query} for name, query in queries.items()]
    elif isinstance(queries, Sequence) and not isinstance(queries, str):
        items = [dict(query) if isinstance(query, Mapping) else {"query": query} for query in queries]
    else:
        raise _error("queries", "pass a list of query dicts or a mapping of query name to ZOQL")
    if not items:
        raise _error("queries", "no query given; AQuA needs 1 to 50 queries")
    if len(items) > MAX_QUERIES:
        raise _error("queries", f"{len(items)} queries given; AQuA allows at most {MAX_QUERIES} per job")

    names: set[str] = set()
    for position, item in enumerate(items):
        query = item.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _error(f"queries[{position}]", "'query' must be a non-empty ZOQL string")
        item.setdefault("name", f"query_{position + 1}")
        item.setdefault("type", "zoqlexport")
        if item["type"] not in QUERY_TYPES:
            raise _error(f"queries[{position}]", f"type {item['type']!r} is unknown; use one of {QUERY_TYPES}")
        if item["name"] in names:
            raise _error(f"queries[{position}]", f"name {item['name']!r} is used twice; query names must be unique")
        names.add(item["name"])
    return items


def _error(argument: str, problem: str) -> AquaConfigurationError:
    return AquaConfigurationError(f"Invalid AQuA job argument {argument}: {problem}.")
