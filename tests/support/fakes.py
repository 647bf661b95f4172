"""Small stand-ins for what Airflow hands an operator (task instance, task state store), shared by the tests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook

QUERIES = {"accounts": "select Id, Name from Account"}


class FakeRun:
    """The XCom of one dag run, by task id, map index and key, shared by its task instances."""

    def __init__(self) -> None:
        self.xcom: dict[tuple[str, int, str], object] = {}
        self.map_indexes: dict[str, set[int]] = {}

    def task_instance(self, task_id: str, map_index: int = -1, try_number: int = 1) -> FakeTaskInstance:
        self.map_indexes.setdefault(task_id, set()).add(map_index)
        return FakeTaskInstance(task_id, try_number=try_number, map_index=map_index, run=self)


class FakeTaskInstance(SimpleNamespace):
    """What the operators and callbacks read from ``context["ti"]``: its own XCom (``xcom``) and the run's."""

    def __init__(
        self,
        task_id: str = "cancel",
        try_number: int = 1,
        map_index: int = -1,
        run: FakeRun | None = None,
        dag_id: str = "dag",
    ) -> None:
        super().__init__(
            dag_id=dag_id,
            task_id=task_id,
            run_id="manual__2026-11-25T10:00:00+00:00",
            try_number=try_number,
            map_index=map_index,
            xcom={},
            run=run or FakeRun(),
        )

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value
        self.run.xcom[(self.task_id, self.map_index, key)] = value

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int | None = None, **_: object) -> object:
        map_index = self.map_index if map_indexes is None else map_indexes
        return self.run.xcom.get((task_ids, map_index, key))

    def get_task_states(self, dag_id: str, task_ids: list[str], run_ids: list[str], **_: object) -> dict:
        """As Airflow answers: ``{run_id: {"<task id>" or "<task id>_<map index>": state}}``."""
        states = {
            task_id if map_index < 0 else f"{task_id}_{map_index}": "failed"
            for task_id in task_ids
            for map_index in self.run.map_indexes.get(task_id, ())
        }
        return {run_id: states for run_id in run_ids}


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
