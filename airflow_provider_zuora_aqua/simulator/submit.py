"""Validation of the ``POST /v1/batch-query/`` body into a :class:`JobSpec`.

AQuA refuses a bad submission with HTTP 200 and an ``{"errorCode", "message"}`` body;
every check here raises :class:`~.errors.AquaError` with the code Zuora uses where its
table has one (see :mod:`.errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import errors
from .errors import AquaError
from .zoql import ParsedQuery, ZoqlSyntaxError, parse_zoql

FORMATS = ("csv", "zip", "gzip")
VERSIONS = ("1.0", "1.1")
QUERY_TYPES = ("zoqlexport", "zoql")
DELETED_FORMATS = ("numeric", "boolean")
MAX_QUERIES = 50
MAX_JOB_NAME = 32
MAX_NOTIFY_URL = 5000
MAX_OFFSET = 3600
# Formats AQuA documents for incrementalTime ("2014-05-21 14:28:00"), plus ISO 8601.
_INCREMENTAL_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class QuerySpec:
    """One accepted query of a job."""

    name: str
    query: str
    batch_type: str
    parsed: ParsedQuery
    api_version: str | None
    deleted: dict[str, Any] | None


@dataclass(frozen=True)
class JobSpec:
    """An accepted submission, normalised (lower-case format, booleans as bool)."""

    name: str | None
    format: str
    version: str
    encrypted: str
    use_query_labels: bool
    date_time_utc: bool
    partner: str | None
    project: str | None
    incremental_time: str | None
    offset: int | float | None
    null_replacement: str | None
    notify_url: str | None
    queries: tuple[QuerySpec, ...]

    @property
    def stateful(self) -> bool:
        """Version 1.1 jobs are stateful: Zuora keeps a watermark per partner/project."""
        return self.version == "1.1"


def _field_error(field: str, message: str) -> AquaError:
    return AquaError(errors.INVALID_FIELD, f"Invalid value for field '{field}': {message}")


def _optional_str(payload: dict[str, Any], field: str) -> str | None:
    value = payload.get(field)
    if value is None or isinstance(value, str):
        return value
    raise _field_error(field, "expected a string")


def _flag(payload: dict[str, Any], field: str) -> bool:
    # Zuora's samples send these as strings ("true"); the SDK sends JSON booleans.
    value = payload.get(field)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _field_error(field, "expected true or false")


def _choice(payload: dict[str, Any], field: str, choices: tuple[str, ...], default: str) -> str:
    value = payload.get(field)
    if value is None:
        return default
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise _field_error(field, f"{value!r}; expected one of {', '.join(choices)}")


def _offset(payload: dict[str, Any]) -> int | float | None:
    value = payload.get("offset")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_OFFSET:
        raise _field_error("offset", f"{value!r}; expected a number of seconds from 0 to {MAX_OFFSET}")
    return value


def _incremental_time(payload: dict[str, Any]) -> str | None:
    value = payload.get("incrementalTime")
    if value is None:
        return None
    if isinstance(value, str):
        for pattern in _INCREMENTAL_TIME_FORMATS:
            try:
                datetime.strptime(value, pattern)
            except ValueError:
                continue
            return value
    raise AquaError(errors.INVALID_INCREMENTAL_TIME, "The incremental timestamp is invalid.")


def _deleted(item: dict[str, Any], stateful: bool) -> dict[str, Any] | None:
    # The simulator's reading of Zuora's docs: a stateful job exports deleted records in its
    # increments (a full load only with forceExport); a stateless job only with forceExport, which
    # then exports the deleted records (kept 30 days) that match its query along with live ones.
    value = item.get("deleted")
    if value is None:
        return None
    force_export = value.get("forceExport", False) if isinstance(value, dict) else False
    if not stateful and force_export is not True:
        raise AquaError(
            errors.STATELESS_DELETED_UNSUPPORTED,
            "Stateless AQuA does not support deleted columns unless deleted.forceExport is true.",
        )
    if not isinstance(value, dict) or not isinstance(value.get("column"), str) or not value["column"]:
        raise _field_error("deleted", "expected an object with a 'column' string")
    deleted_format = value.get("format", "Boolean")
    if not isinstance(deleted_format, str) or deleted_format.lower() not in DELETED_FORMATS:
        raise _field_error("deleted.format", f"{deleted_format!r}; expected Numeric or Boolean")
    if not isinstance(force_export, bool):
        raise _field_error("deleted.forceExport", "expected true or false")
    return {"column": value["column"], "format": deleted_format, "forceExport": force_export}


def _query(item: object, index: int, stateful: bool) -> QuerySpec:
    if not isinstance(item, dict):
        raise _field_error(f"queries[{index}]", "expected an object")
    text = item.get("query")
    if not isinstance(text, str):
        raise _field_error(f"queries[{index}].query", "expected a ZOQL string")
    try:
        parsed = parse_zoql(text)
    except ZoqlSyntaxError as exc:
        raise AquaError(
            errors.QUERY_SYNTAX_ERROR,
            f"There is a syntax error in one of the queries in the AQuA input. Query {index + 1}: {exc}.",
        ) from None
    name = _optional_str(item, "name")
    api_version = item.get("apiVersion")
    if api_version is not None and (isinstance(api_version, bool) or not isinstance(api_version, (str, int, float))):
        raise _field_error(f"queries[{index}].apiVersion", "expected a string such as '127.0'")
    return QuerySpec(
        # Zuora names an unnamed batch after its object, as in its own samples.
        name=name or parsed.object_name,
        query=text,
        batch_type=_choice(item, "type", QUERY_TYPES, "zoqlexport"),
        parsed=parsed,
        api_version=None if api_version is None else str(api_version),
        deleted=_deleted(item, stateful),
    )


def parse_submit(payload: object) -> JobSpec:
    """Validate a decoded submit body; raise :class:`AquaError` the way AQuA refuses it."""
    if not isinstance(payload, dict):
        raise _field_error("body", "expected a JSON object")
    version = payload.get("version", "1.0")
    if not isinstance(version, str) or version not in VERSIONS:
        raise _field_error("version", f"{version!r}; expected '1.0' (stateless) or '1.1' (stateful)")
    stateful = version == "1.1"
    name = _optional_str(payload, "name")
    if name is not None and len(name) > MAX_JOB_NAME:
        raise _field_error("name", f"the job name is limited to {MAX_JOB_NAME} characters")
    encrypted = _choice(payload, "encrypted", ("none", "pgp"), "none")
    if encrypted == "pgp":
        raise _field_error("encrypted", "'pgp' needs a tenant PGP key, which the simulator does not have")
    partner = _optional_str(payload, "partner")
    project = _optional_str(payload, "project")
    if stateful and not (partner and project):
        raise _field_error("partner/project", "both are required for a stateful (version 1.1) job")
    notify_url = _optional_str(payload, "notifyUrl")
    if notify_url is not None and len(notify_url) >= MAX_NOTIFY_URL:
        raise AquaError(errors.NOTIFY_URL_TOO_LONG, "notifyURL must be less than 5000 characters in length.")
    queries = payload.get("queries")
    if queries is not None and not isinstance(queries, list):
        raise _field_error("queries", "expected a list of query objects")
    if not queries:
        raise AquaError(errors.NO_QUERIES, "There are no queries included in the AQuA version 1.0 request.")
    if len(queries) > MAX_QUERIES:
        raise AquaError(
            errors.TOO_MANY_QUERIES,
            "Invalid number of queries allowed. A maximum of 50 queries are supported in an AQuA request.",
        )
    return JobSpec(
        name=name,
        format=_choice(payload, "format", FORMATS, "csv"),
        version=version,
        encrypted=encrypted,
        use_query_labels=_flag(payload, "useQueryLabels"),
        date_time_utc=_flag(payload, "dateTimeUtc"),
        partner=partner if stateful else None,
        project=project if stateful else None,
        incremental_time=_incremental_time(payload),
        offset=_offset(payload),
        null_replacement=_optional_str(payload, "nullReplacement"),
        notify_url=notify_url,
        queries=tuple(_query(item, index, stateful) for index, item in enumerate(queries)),
    )
