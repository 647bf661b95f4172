"""What a task records in Airflow's task state store so that its next try finds its AQuA job.

Airflow 3.3+ keeps ``context["task_state_store"]`` across the tries of a task instance. The
submit operator writes, in this order:

1. before it sends a submit: the submit's ``Idempotency-Key`` (``aqua_submit_key``, kept 24
   hours, as long as Zuora keeps the key) and its body (``aqua_submit_body``);
2. once Zuora returned the job: its id (``aqua_job_id``);

and forgets all of it once the job's end has been handled. A try that dies anywhere in between
leaves its successor enough to find the job: the id, or else the key to send again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_provider_zuora_aqua.utils.keys import (
    AQUA_JOB_ID_XCOM_KEY,
    AQUA_SUBMIT_BODY_STATE_KEY,
    AQUA_SUBMIT_KEY_STATE_KEY,
)

#: Zuora forgets an Idempotency-Key 24 hours after it was set: so does the record.
SUBMIT_KEY_RETENTION = timedelta(hours=24)


class JobRecord:
    """
    The AQuA job of a task instance, as recorded in its task state store.

    :param store: ``context["task_state_store"]``; None (Airflow < 3.3, or ``durable=False``)
        records nothing and finds nothing.
    """

    def __init__(self, store: Any) -> None:
        self._store = store

    @property
    def job_id(self) -> str | None:
        return self._get(AQUA_JOB_ID_XCOM_KEY)

    @property
    def submit_key(self) -> str | None:
        return self._get(AQUA_SUBMIT_KEY_STATE_KEY)

    @property
    def submit_body(self) -> dict[str, Any] | None:
        body = None if self._store is None else self._store.get(AQUA_SUBMIT_BODY_STATE_KEY)
        return body if isinstance(body, dict) else None

    def submitting(self, key: str, body: dict[str, Any]) -> None:
        """Record a submit before it is sent; an older job id is dropped, so it cannot hide the new key."""
        if self._store is None:
            return
        self._store.delete(AQUA_JOB_ID_XCOM_KEY)
        self._store.set(AQUA_SUBMIT_KEY_STATE_KEY, key, retention=SUBMIT_KEY_RETENTION)
        self._store.set(AQUA_SUBMIT_BODY_STATE_KEY, body, retention=SUBMIT_KEY_RETENTION)

    def submitted(self, job_id: str) -> None:
        if self._store is not None:
            self._store.set(AQUA_JOB_ID_XCOM_KEY, job_id)

    def forget(self) -> None:
        """The job's end was handled: a later clear of the task exports anew."""
        if self._store is None:
            return
        for key in (AQUA_JOB_ID_XCOM_KEY, AQUA_SUBMIT_KEY_STATE_KEY, AQUA_SUBMIT_BODY_STATE_KEY):
            self._store.delete(key)

    def _get(self, key: str) -> str | None:
        value = None if self._store is None else self._store.get(key)
        return value if isinstance(value, str) and value else None
