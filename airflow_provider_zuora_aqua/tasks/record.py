"""The names under which tasks record their AQuA jobs: XCom keys and task state store keys.

One place, because the operator writes them and the failure callback, the retry and external
tools read them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_provider_zuora_aqua.client.wire import make_idempotency_key, make_track_id

#: XCom key (and task state store key) under which a task records the id of its AQuA job.
AQUA_JOB_ID_XCOM_KEY = "aqua_job_id"
#: XCom key of the rendered connection id the job was submitted with.
AQUA_CONN_ID_XCOM_KEY = "aqua_conn_id"
#: Task state store key of the ``Idempotency-Key`` of a try's submit, recorded before it is sent.
AQUA_SUBMIT_KEY_STATE_KEY = "aqua_submit_key"
#: Task state store key of the body of that submit, so that a retry can send it again unchanged.
AQUA_SUBMIT_BODY_STATE_KEY = "aqua_submit_body"
#: XCom key of a submit about to be sent (``{"key", "body", "conn_id"}``): a failure callback
#: that finds no job id sends that keyed submit again to learn the job, then cancels it.
AQUA_SUBMIT_XCOM_KEY = "aqua_submit"


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
