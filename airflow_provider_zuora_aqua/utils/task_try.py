"""Identifiers derived from the task try that makes a call (Airflow-aware; the wire rules are in protocol).

Both name the try: ``<prefix>.<dag_id>.<task_id>[<map_index>].<run_id>.<try_number>``, where
characters a header cannot carry (and ``: ; " '``) become ``-`` and a value over the header's
limit is cut and ends in ``~`` plus 12 hex digits of the SHA-256 of the whole value.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_zuora_aqua.utils.protocol import make_idempotency_key, make_track_id


def task_track_id(ti: Any) -> str:
    """A ``Zuora-Track-Id`` (at most 64 characters) naming the task try that makes the call."""
    return make_track_id("airflow", *_try_parts(ti))


def task_idempotency_key(ti: Any) -> str:
    """
    The ``Idempotency-Key`` (at most 255 characters) of the task try's submit.

    The same for every resend within the try, different for every try (the try number is in
    it): Zuora answers a resend with the job the first request created.
    """
    return make_idempotency_key("airflow-aqua-submit", *_try_parts(ti))


def _try_parts(ti: Any) -> tuple[object, ...]:
    map_index = getattr(ti, "map_index", -1)
    task = ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}[{map_index}]"
    return ti.dag_id, task, ti.run_id, ti.try_number
