"""
Stand-ins for Zuora and for the task's record, for unit tests of the job engine and its adapters.

:class:`ScriptedZuora` holds what Zuora answers and every call made to it; :func:`hook_class`
makes a hook class bound to it, so that a hook the code under test builds itself (for another
connection, or ``with_new_session()``) answers from the same script. An answer is a job dict
(returned), an exception instance (raised) or a callable (called with the call's arguments).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_zuora_aqua.tasks.job_records import TaskJobRecord

DEFAULT_CONN_ID = "zuora_aqua_default"
BODY = {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}


def job(job_id: str, status: str, batch: str = "a", **extra: Any) -> dict[str, Any]:
    """An AQuA job JSON; a completed one has one completed batch, named as the query ``batch``."""
    answer: dict[str, Any] = {"id": job_id, "status": status, **extra}
    if status == "completed" and "batches" not in extra:
        answer["batches"] = [{"name": batch, "status": "completed", "recordCount": 1, "fileId": f"file-{job_id}"}]
    return answer


@dataclass
class Call:
    """One call to Zuora: which hook (connection, session) made it, and its arguments."""

    method: str
    conn_id: str
    session: int
    job_id: str | None = None
    key: str | None = None
    body: dict[str, Any] | None = None
    max_seconds: float | None = None
    thread: str = field(default_factory=lambda: threading.current_thread().name)
    #: How many times the hook sent it (more than 1: the answers of the earlier sends were lost).
    attempts: int = 1


@dataclass
class AfterLostSends:
    """A scripted answer the hook got only by sending the call again: the earlier answers were lost."""

    answer: Any
    sends: int = 2


class ScriptedZuora:
    """
    What Zuora answers. Submits answer from ``submits`` in order (then a new ``submitted`` job
    each); reads of a job answer from ``reads[job_id]`` in order, the last one repeated (no
    script: ``executing``); a cancel answers ``cancels[job_id]`` (default: ``cancelled``).
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.submits: list[Any] = []
        self.reads: dict[str, list[Any]] = {}
        self.cancels: dict[str, Any] = {}
        self.file_requests: list[str] = []
        self.sessions = 0
        self._new_ids = 0

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def new_session(self) -> int:
        self.sessions += 1
        return self.sessions

    def submit(self, call: Call) -> Any:
        if self.submits:
            return _answer(self.submits.pop(0), call)
        self._new_ids += 1
        return job(f"job-{self._new_ids}", "submitted")

    def read(self, call: Call) -> Any:
        script = self.reads.get(call.job_id or "")
        if not script:
            return job(str(call.job_id), "executing")
        return _answer(script.pop(0) if len(script) > 1 else script[0], call)

    def cancel(self, call: Call) -> Any:
        return _answer(self.cancels.get(call.job_id or "", job(str(call.job_id), "cancelled")), call)


def _answer(answer: Any, call: Call) -> Any:
    if isinstance(answer, AfterLostSends):
        call.attempts = answer.sends
        answer = answer.answer
    if isinstance(answer, BaseException):
        raise answer
    if callable(answer):
        return answer(call)
    return dict(answer)


class StubHook:
    """The hook calls the engine, the operators and the callback make, answered by :attr:`zuora`."""

    zuora: ScriptedZuora
    default_conn_name = DEFAULT_CONN_ID

    def __init__(self, zuora_conn_id: str = DEFAULT_CONN_ID, *, settings: Any = None) -> None:
        self.zuora_conn_id = zuora_conn_id
        self.session = self.zuora.new_session()
        self.last_request_id: str | None = None
        self.last_attempts = 0

    def _call(self, method: str, handler: Callable[[Call], Any], **fields: Any) -> Any:
        call = Call(method, self.zuora_conn_id, self.session, **fields)
        self.zuora.calls.append(call)
        self.last_request_id = f"req-{len(self.zuora.calls)}"
        try:
            return handler(call)
        finally:
            self.last_attempts = call.attempts

    def with_new_session(self) -> StubHook:
        return type(self)(self.zuora_conn_id)

    def submit_job(
        self,
        body: dict[str, Any],
        *,
        track_id: str | None = None,
        idempotency_key: str | None = None,
        max_seconds: float | None = None,
    ) -> dict[str, Any]:
        return self._call("submit", self.zuora.submit, key=idempotency_key, body=body, max_seconds=max_seconds)

    def get_job(self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        return self._call("get", self.zuora.read, job_id=job_id, max_seconds=max_seconds)

    def cancel_job_if_running(
        self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None
    ) -> dict[str, Any]:
        return self._call("cancel", self.zuora.cancel, job_id=job_id, max_seconds=max_seconds)

    def cancel_job(self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None) -> dict:
        return self._call("cancel_job", self.zuora.cancel, job_id=job_id, max_seconds=max_seconds)

    async def aget_job(self, job_id: str, *, track_id: str | None = None) -> dict[str, Any]:
        return self.get_job(job_id, track_id=track_id)

    async def acancel_job_if_running(
        self, job_id: str, *, track_id: str | None = None, max_seconds: float | None = None
    ) -> dict[str, Any]:
        return self.cancel_job_if_running(job_id, track_id=track_id, max_seconds=max_seconds)

    def fetch_file(self, file_id: str, *args: Any, **kwargs: Any) -> Any:
        self.zuora.file_requests.append(file_id)
        raise AssertionError(f"no file request was expected (file {file_id})")


def hook_class(zuora: ScriptedZuora) -> type[StubHook]:
    """A hook class whose every instance answers from ``zuora``."""
    return type("ScriptedHook", (StubHook,), {"zuora": zuora})


class StubLedger:
    """A :class:`~airflow_provider_zuora_aqua.tasks.job_records.JobLedger` that keeps every write, in order."""

    def __init__(self, records: dict[str, TaskJobRecord] | None = None) -> None:
        self.records: dict[str, TaskJobRecord] = dict(records or {})
        self.writes: list[tuple[Any, ...]] = []

    def recorded(self) -> dict[str, TaskJobRecord]:
        return dict(self.records)

    def submitting(self, slot: str, key: str, body: dict[str, Any], conn_id: str) -> None:
        self.writes.append(("submitting", slot, key))
        self.records[slot] = TaskJobRecord(-1, conn_id, None, key, body)

    def submitted(self, slot: str, job_id: str) -> None:
        self.writes.append(("submitted", slot, job_id))
        self.records[slot].job_id = job_id

    def drop(self, slot: str) -> None:
        self.writes.append(("drop", slot))
        self.records.pop(slot, None)


class FakeClock:
    """A monotonic clock that moves only when told (or when :class:`ClockEvent` waits on it)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ClockEvent(threading.Event):
    """``stopped``: a real event whose waits pass on :class:`FakeClock` at once instead of in real time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set() and timeout is not None:
            self.waits.append(timeout)
            self.clock.advance(timeout)
        return self.is_set()
