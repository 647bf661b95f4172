"""What a task records about its AQuA job: one :class:`TaskJobRecord`, in the task state store and XCom.

A task instance (one map index of a mapped task) records, before and while it talks to Zuora:

* the rendered connection id it submits with;
* the submit it is about to send (its ``Idempotency-Key`` and body), before sending it;
* the job id, the moment Zuora names it.

Both stores hold the same fields under the same names; only the submit is split in the task
state store, as it always was:

============  ==========================================  =======================================
field         task state store (survives tries; 3.3+)     XCom (this try; read by the callbacks)
============  ==========================================  =======================================
job id        ``aqua_job_id``                             ``aqua_job_id``
conn id       ``aqua_conn_id``                            ``aqua_conn_id``
submit        ``aqua_submit_key``, ``aqua_submit_body``   ``aqua_submit``: ``{"key", "body",
                                                          "conn_id", "map_index"}``
============  ==========================================  =======================================

The operator opens the record of its task instance (what earlier tries left in the state store,
mirrored into this try's XCom) and writes through it; the failure callback pulls the record of
each map index from XCom. A record names its job by its job id, or, without one, by its submit:
sent again with its key, Zuora answers with the job the first request created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from airflow_provider_zuora_aqua.tasks.try_ids import map_index_of

#: XCom key (and task state store key) under which a task records the id of its AQuA job.
AQUA_JOB_ID_XCOM_KEY = "aqua_job_id"
#: XCom key (and task state store key) of the rendered connection id the job was submitted with.
AQUA_CONN_ID_XCOM_KEY = "aqua_conn_id"
#: Task state store key of the ``Idempotency-Key`` of a try's submit, recorded before it is sent.
AQUA_SUBMIT_KEY_STATE_KEY = "aqua_submit_key"
#: Task state store key of the body of that submit, so that a retry can send it again unchanged.
AQUA_SUBMIT_BODY_STATE_KEY = "aqua_submit_body"
#: XCom key of a submit about to be sent (``{"key", "body", "conn_id", "map_index"}``): a failure
#: callback that finds no job id sends that keyed submit again to learn the job, then cancels it.
AQUA_SUBMIT_XCOM_KEY = "aqua_submit"

#: Zuora forgets an Idempotency-Key 24 hours after it was set: so does the record.
SUBMIT_KEY_RETENTION = timedelta(hours=24)


@dataclass
class TaskJobRecord:
    """
    The AQuA job of one task instance (one map index): the one reader and writer of both stores.

    :param map_index: the task instance's map index (-1: not mapped).
    :param conn_id: the rendered connection id of the job (or of the submit about to be sent).
    :param job_id: the job's id, once Zuora named it.
    :param submit_key: the ``Idempotency-Key`` of the submit, recorded before it is sent.
    :param submit_body: the body of that submit.
    """

    map_index: int = -1
    conn_id: str | None = None
    job_id: str | None = None
    submit_key: str | None = None
    submit_body: dict[str, Any] | None = None
    #: Where a record opened by a task writes: its task instance (XCom) and task state store.
    _ti: Any = field(default=None, repr=False, compare=False)
    _store: Any = field(default=None, repr=False, compare=False)

    # -- the task: open, then write --------------------------------------------------------

    @classmethod
    def open(cls, ti: Any, store: Any, conn_id: str) -> TaskJobRecord:
        """
        The record of the running task instance, mirrored into this try's XCom.

        :param store: ``context["task_state_store"]``; None (Airflow < 3.3, or ``durable=False``):
            nothing of earlier tries is found, and only XCom is written.
        :param conn_id: the task's rendered connection id, for a job it is about to submit.
        """
        record = cls(map_index=map_index_of(ti), conn_id=conn_id, _ti=ti, _store=store)
        if store is not None:
            record.job_id = _text(store.get(AQUA_JOB_ID_XCOM_KEY))
            record.submit_key, record.submit_body = _submit(
                store.get(AQUA_SUBMIT_KEY_STATE_KEY), store.get(AQUA_SUBMIT_BODY_STATE_KEY)
            )
            if record.job_id or record.submit_key:
                # The connection an earlier try submitted with (none recorded before this field existed).
                record.conn_id = _text(store.get(AQUA_CONN_ID_XCOM_KEY)) or conn_id
        # The failure callback may run where templates are not rendered: it reads the real conn id here.
        # The submit is written even when there is none yet (``{}``: Airflow 3.0 refuses a None
        # value): the failure callback reads it first, and reads the job id only when it names one
        # (Airflow logs every key it does not find as an error).
        ti.xcom_push(key=AQUA_CONN_ID_XCOM_KEY, value=record.conn_id)
        ti.xcom_push(key=AQUA_SUBMIT_XCOM_KEY, value=record._submit_xcom() if record.names_a_job else {})
        if record.job_id:
            ti.xcom_push(key=AQUA_JOB_ID_XCOM_KEY, value=record.job_id)
        return record

    def submitting(self, key: str, body: dict[str, Any], conn_id: str) -> None:
        """
        Record a submit before it is sent. An older job id is dropped from both stores, so that
        it cannot hide the new submit from a retry or from the failure callback.
        """
        had_job_id = self.job_id is not None
        self.job_id, self.submit_key, self.submit_body, self.conn_id = None, key, body, conn_id
        if self._store is not None:
            self._store.delete(AQUA_JOB_ID_XCOM_KEY)
            self._store.set(AQUA_CONN_ID_XCOM_KEY, conn_id)
            self._store.set(AQUA_SUBMIT_KEY_STATE_KEY, key, retention=SUBMIT_KEY_RETENTION)
            self._store.set(AQUA_SUBMIT_BODY_STATE_KEY, body, retention=SUBMIT_KEY_RETENTION)
        self._ti.xcom_push(key=AQUA_CONN_ID_XCOM_KEY, value=conn_id)
        self._ti.xcom_push(key=AQUA_SUBMIT_XCOM_KEY, value=self._submit_xcom())
        if had_job_id:
            self._ti.xcom_push(key=AQUA_JOB_ID_XCOM_KEY, value="")  # no older job id to cancel; not None for 3.0

    def submitted(self, job_id: str) -> None:
        """Record the job id the moment it is known (once: a re-attached job was recorded before)."""
        if job_id == self.job_id:
            return
        self.job_id = job_id
        self._ti.xcom_push(key=AQUA_JOB_ID_XCOM_KEY, value=job_id)
        if not self.submit_key:
            # A job known by its id alone: the submit entry says so, and the callback reads the id.
            self._ti.xcom_push(key=AQUA_SUBMIT_XCOM_KEY, value=self._submit_xcom())
        if self._store is not None:
            self._store.set(AQUA_JOB_ID_XCOM_KEY, job_id)
            self._store.set(AQUA_CONN_ID_XCOM_KEY, self.conn_id)

    def answered(self) -> None:
        """
        Zuora answered the submit with a refusal: no job exists, so nothing needs sending again.
        The submit is dropped from both stores (a failure callback would otherwise resend it).
        """
        self.submit_key = self.submit_body = None
        if self._store is not None:
            self._store.delete(AQUA_SUBMIT_KEY_STATE_KEY)
            self._store.delete(AQUA_SUBMIT_BODY_STATE_KEY)
        self._ti.xcom_push(key=AQUA_SUBMIT_XCOM_KEY, value={})

    def forget(self) -> None:
        """
        The job's end was handled: a later clear of the task exports anew. XCom keeps the try's
        job id for downstream tasks (a sensor, a download).
        """
        if self._store is None:
            return
        for key in (AQUA_JOB_ID_XCOM_KEY, AQUA_CONN_ID_XCOM_KEY, AQUA_SUBMIT_KEY_STATE_KEY, AQUA_SUBMIT_BODY_STATE_KEY):
            self._store.delete(key)

    # -- the failure callback: pull ---------------------------------------------------------

    @classmethod
    def pull(cls, ti: Any, task_id: str, map_index: int, fallback_conn_id: str) -> TaskJobRecord:
        """
        The record a task instance of this run left in XCom (read-only).

        :param ti: a task instance of the run, whose ``xcom_pull`` reads it.
        :param fallback_conn_id: the connection of a job recorded without one (by an older release).
        """

        def pull(key: str) -> Any:
            return ti.xcom_pull(task_ids=task_id, key=key, map_indexes=map_index)

        pulled = pull(AQUA_SUBMIT_XCOM_KEY)
        if pulled == {}:
            # Written when the task started, and never filled: no submit was sent, no job exists.
            return cls(map_index, fallback_conn_id)
        submit = pulled if isinstance(pulled, dict) else {}
        submit_key, submit_body = _submit(submit.get("key"), submit.get("body"))
        conn_id = _text(pull(AQUA_CONN_ID_XCOM_KEY)) or _text(submit.get("conn_id")) or fallback_conn_id
        return cls(map_index, conn_id, _text(pull(AQUA_JOB_ID_XCOM_KEY)), submit_key, submit_body)

    @property
    def names_a_job(self) -> bool:
        """Whether the record names a job: by its id, or by a submit that may have created it."""
        return bool(self.job_id or self.submit_key)

    def _submit_xcom(self) -> dict[str, Any]:
        return {"key": self.submit_key, "body": self.submit_body, "conn_id": self.conn_id, "map_index": self.map_index}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _submit(key: object, body: object) -> tuple[str | None, dict[str, Any] | None]:
    """A submit record is whole (a key and a body) or absent."""
    if isinstance(key, str) and key and isinstance(body, dict):
        return key, body
    return None, None


#: XCom key (and task state store key) of the jobs of a task that runs several at once (the
#: incremental export): a list of ``{"slot", "job_id", "conn_id", "key", "body", "map_index"}``,
#: one per job in flight, each a :class:`TaskJobRecord` under a name of the task's choosing.
AQUA_JOBS_XCOM_KEY = "aqua_jobs"


@dataclass
class TaskJobSet:
    """
    The AQuA jobs one task instance has in flight at once, by slot (the incremental export: one
    per window), written whole to both stores at every change.

    Each entry is a :class:`TaskJobRecord` and follows its rules: a submit is recorded before it
    is sent, its job id the moment Zuora names it; a refused submit and a job whose end was
    handled leave the set. The failure callback reads them with :meth:`pull`.
    """

    map_index: int = -1
    jobs: dict[str, TaskJobRecord] = field(default_factory=dict)
    _ti: Any = field(default=None, repr=False, compare=False)
    _store: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, ti: Any, store: Any) -> TaskJobSet:
        """The set of the running task instance: what earlier tries left in the state store, mirrored into XCom."""
        jobs = cls(map_index=map_index_of(ti), _ti=ti, _store=store)
        if store is not None:
            jobs.jobs = _entries(store.get(AQUA_JOBS_XCOM_KEY), jobs.map_index)
        ti.xcom_push(key=AQUA_JOBS_XCOM_KEY, value=jobs._value())
        return jobs

    def submitting(self, slot: str, key: str, body: dict[str, Any], conn_id: str) -> None:
        """Record a submit before it is sent."""
        self.jobs[slot] = TaskJobRecord(self.map_index, conn_id, None, key, body)
        self._save()

    def submitted(self, slot: str, job_id: str) -> None:
        """Record the job id the moment it is known."""
        if self.jobs[slot].job_id != job_id:
            self.jobs[slot].job_id = job_id
            self._save()

    def recorded(self) -> dict[str, TaskJobRecord]:
        """The jobs in flight by slot (a copy: dropping one while iterating is safe)."""
        return dict(self.jobs)

    def drop(self, slot: str) -> None:
        """The slot's submit was refused (no job), or its job's end was handled."""
        if self.jobs.pop(slot, None) is not None:
            self._save()

    def _save(self) -> None:
        value = self._value()
        if self._store is not None:
            self._store.set(AQUA_JOBS_XCOM_KEY, value, retention=SUBMIT_KEY_RETENTION)
        self._ti.xcom_push(key=AQUA_JOBS_XCOM_KEY, value=value)

    def _value(self) -> list[dict[str, Any]]:
        return [
            {
                "slot": slot,
                "job_id": record.job_id,
                "conn_id": record.conn_id,
                "key": record.submit_key,
                "body": record.submit_body,
                "map_index": self.map_index,
            }
            for slot, record in self.jobs.items()
        ]

    @classmethod
    def pull(cls, ti: Any, task_id: str, map_index: int, fallback_conn_id: str) -> list[TaskJobRecord]:
        """The jobs a task instance of this run left in XCom (read-only), for the failure callback."""
        value = ti.xcom_pull(task_ids=task_id, key=AQUA_JOBS_XCOM_KEY, map_indexes=map_index)
        records = _entries(value, map_index)
        for record in records.values():
            record.conn_id = record.conn_id or fallback_conn_id
        return list(records.values())


def _entries(value: object, map_index: int) -> dict[str, TaskJobRecord]:
    """The well-formed entries of a stored set; anything else (a hostile or older value) is skipped."""
    entries: dict[str, TaskJobRecord] = {}
    for entry in value if isinstance(value, list) else ():
        if not isinstance(entry, dict) or not _text(entry.get("slot")):
            continue
        key, body = _submit(entry.get("key"), entry.get("body"))
        entries[entry["slot"]] = TaskJobRecord(
            map_index, _text(entry.get("conn_id")), _text(entry.get("job_id")), key, body
        )
    return entries


class JobLedger(Protocol):
    """
    What the job engine writes through: the jobs of one task instance, by slot (a name of the
    operator's choosing), in the stores that outlive the task process.
    """

    def recorded(self) -> dict[str, TaskJobRecord]:
        """The jobs (or submits) earlier tries left, by slot."""

    def submitting(self, slot: str, key: str, body: dict[str, Any], conn_id: str) -> None:
        """Record a submit before it is sent."""

    def submitted(self, slot: str, job_id: str) -> None:
        """Record the job id the moment it is known."""

    def drop(self, slot: str) -> None:
        """The slot's submit was refused (no job), or its job's end was handled."""


#: The slot of the one job of :class:`OneJobLedger`.
ONE_JOB_SLOT = "job"


@dataclass
class OneJobLedger:
    """A :class:`TaskJobRecord` as a :class:`JobLedger` of one slot (``AquaSubmitJobOperator``'s job)."""

    record: TaskJobRecord

    def recorded(self) -> dict[str, TaskJobRecord]:
        return {ONE_JOB_SLOT: self.record} if self.record.names_a_job else {}

    def submitting(self, slot: str, key: str, body: dict[str, Any], conn_id: str) -> None:
        self.record.submitting(key, body, conn_id)

    def submitted(self, slot: str, job_id: str) -> None:
        self.record.submitted(job_id)

    def drop(self, slot: str) -> None:
        self.record.answered()
        self.record.forget()
