"""Names a task try gives its calls to Zuora: ``Zuora-Track-Id`` and ``Idempotency-Key``."""

from __future__ import annotations

import uuid
from typing import Any

from airflow_provider_zuora_aqua.client.request import IDEMPOTENCY_KEY_MAX_LENGTH, make_idempotency_key, make_track_id


def task_track_id(ti: Any) -> str:
    """A ``Zuora-Track-Id`` (at most 64 characters) naming the task try that makes the call."""
    return make_track_id("airflow", *_try_parts(ti))


def task_idempotency_key(ti: Any) -> str:
    """
    A new ``Idempotency-Key`` (at most 255 characters) for a submit of the task try.

    It names the try for a reader and ends in a random UUID, so that no other task, DAG or
    Airflow deployment on the tenant can derive the same key (names made safe for a header
    collide: ``etl`` + ``zuora.export`` and ``etl.zuora`` + ``export``, or non-ASCII ids).
    Make it once per submit and record it before sending: every resend of that submit, the
    retry's and the failure callback's included, reads it back from the record, and Zuora
    answers them with the job the first request created.
    """
    unique = uuid.uuid4().hex
    readable = make_idempotency_key("airflow-aqua-submit", *_try_parts(ti))
    return f"{readable[: IDEMPOTENCY_KEY_MAX_LENGTH - len(unique) - 1]}.{unique}"


def map_index_of(ti: Any) -> int:
    """The task instance's map index; -1 when it is not mapped."""
    map_index = getattr(ti, "map_index", -1)
    return map_index if isinstance(map_index, int) else -1


def _try_parts(ti: Any) -> tuple[object, ...]:
    map_index = map_index_of(ti)
    task = ti.task_id if map_index < 0 else f"{ti.task_id}[{map_index}]"
    return ti.dag_id, task, ti.run_id, ti.try_number
