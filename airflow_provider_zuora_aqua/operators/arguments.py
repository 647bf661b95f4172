"""The operators' arguments, checked and turned into what the job engine takes."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_zuora_aqua.compat import AirflowProviderDeprecationWarning
from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError
from airflow_provider_zuora_aqua.incremental.ledger import validate_query_name, validate_query_names
from airflow_provider_zuora_aqua.incremental.query import validate_cursor, window_query
from airflow_provider_zuora_aqua.incremental.windows import ONE_SECOND, Window, validate_start
from airflow_provider_zuora_aqua.jobs.status import validate_interval


def job_timeout_argument(job_timeout: float | None, timeout: float | None, *, operator: str) -> float | None:
    """
    ``job_timeout``, the one name of the job deadline across operators; the submit operator's
    older ``timeout`` still works, with a deprecation warning.
    """
    if timeout is not None:
        if job_timeout is not None:
            raise AquaConfigurationError(f"{operator}: give job_timeout only (timeout is its deprecated name)")
        warnings.warn(
            f"{operator}(timeout=...) is deprecated: use job_timeout=..., the name every AQuA operator uses",
            AirflowProviderDeprecationWarning,
            stacklevel=3,
        )
        job_timeout = timeout
    return None if job_timeout is None else validate_interval("job_timeout", job_timeout)


def add_callback(existing: Any, callback: Any) -> list[Any]:
    """Append ``callback`` to an ``on_*_callback`` value (None, a callable or a list), once."""
    callbacks = list(existing) if isinstance(existing, (list, tuple)) else ([existing] if existing else [])
    if callback not in callbacks:
        callbacks.append(callback)
    return callbacks


def deleted_column(deleted: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """AQuA's ``deleted`` object of each query: stateless exports need ``forceExport`` to get deleted rows."""
    if deleted is False or deleted is None:
        return None
    if deleted is True:
        return {"column": "IsDeleted", "format": "Boolean", "forceExport": True}
    if isinstance(deleted, Mapping) and isinstance(deleted.get("column"), str) and deleted["column"]:
        return {"format": "Boolean", "forceExport": True, **deleted}
    raise AquaConfigurationError(
        f"deleted={deleted!r}: give True, or AQuA's deleted object such as "
        "{'column': 'IsDeleted', 'format': 'Numeric'}"
    )


def max_active_jobs_argument(max_active_jobs: object) -> int:
    """The jobs one task runs at once: 1 to 50, the tenant's stateless limit."""
    if isinstance(max_active_jobs, bool) or not isinstance(max_active_jobs, int) or not 1 <= max_active_jobs <= 50:
        raise AquaConfigurationError(
            f"max_active_jobs={max_active_jobs!r}: give 1 to 50 (the tenant runs 50 stateless jobs at once)"
        )
    return max_active_jobs


def templated(*values: object) -> bool:
    """Whether any value still holds a Jinja template (checked once rendered)."""
    return any("{{" in str(value) for value in values)


def export_arguments(queries: object, cursor: object, start: datetime | str) -> tuple[dict[str, str], str, datetime]:
    """The incremental export's rendered queries, cursor and start, checked (each query narrowed to a sample window)."""
    checked_cursor = validate_cursor(cursor)
    checked_start = validate_start(start)
    if not isinstance(queries, Mapping) or not queries:
        raise AquaConfigurationError("queries must be a non-empty mapping of query name to ZOQL select")
    validate_query_names(queries)
    sample = Window(checked_start, checked_start + ONE_SECOND)
    checked = {}
    for name, query in queries.items():
        window_query(query, checked_cursor, sample, name=validate_query_name(name))
        checked[name] = query
    return checked, checked_cursor, checked_start


def deferral_deadline(job_timeout: float | None, execution_timeout: timedelta | None, context: Any) -> float | None:
    """
    Epoch seconds at which the trigger gives up: ``job_timeout``, and also ``execution_timeout``,
    which Airflow 3 does not apply while a task is deferred.
    """
    deadlines = [] if job_timeout is None else [time.time() + job_timeout]
    started = getattr(context["ti"], "start_date", None)
    if execution_timeout is not None and started is not None:
        deadlines.append(started.timestamp() + execution_timeout.total_seconds())
    return min(deadlines, default=None)


def deferred_limit(job_timeout: float | None, execution_timeout: timedelta | None) -> str:
    """The limits a deferred wait ends on, for the timeout error."""
    limits = [f"job_timeout of {job_timeout:g} s"] if job_timeout is not None else []
    if execution_timeout is not None:
        limits.append(f"execution_timeout of {execution_timeout}")
    return " or ".join(limits)
