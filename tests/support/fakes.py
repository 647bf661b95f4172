"""Small stand-ins for what Airflow hands an operator (task instance, task state store), shared by the tests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook

QUERIES = {"accounts": "select Id, Name from Account"}


class FakeTaskInstance(SimpleNamespace):
    """What the operators read from ``context["ti"]``, with an XCom store."""

    def __init__(self, task_id: str = "cancel", try_number: int = 1, map_index: int = -1) -> None:
        super().__init__(
            dag_id="dag",
            task_id=task_id,
            run_id="manual__2026-11-25T10:00:00+00:00",
            try_number=try_number,
            map_index=map_index,
            xcom={},
        )

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str, key: str, **_: object) -> object:
        return self.xcom.get(key)


class FakeStateStore(dict):
    """``context["task_state_store"]`` of Airflow 3.3: survives between tries."""

    def set(self, key: str, value: object, *, retention: Any = None) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def context(ti: FakeTaskInstance | None = None, **extra: object) -> dict:
    return {"ti": ti or FakeTaskInstance(), **extra}


def submit(hook: ZuoraAquaHook) -> str:
    return hook.submit_job(
        {"format": "csv", "version": "1.0", "queries": [{"name": "a", "query": "select Id from Account"}]}
    )["id"]
