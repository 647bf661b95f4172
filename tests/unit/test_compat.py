"""What differs between the Airflow 3 minors we support: copies of operators, and the compat shims."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from unittest import mock

import pytest
from airflow.sdk import DAG
from airflow.serialization import serialized_objects

from airflow_provider_zuora_aqua import compat
from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook
from airflow_provider_zuora_aqua.operators.aqua import AquaSubmitJobOperator
from tests.support.fakes import QUERIES

#: Airflow 3.0: BaseHook has no aget_connection and the SDK no amask_secret; compat adds both.
SHIMMED_AGET_CONNECTION = compat.BaseHook.__module__ == compat.__name__
SHIMMED_AMASK_SECRET = compat.amask_secret.__module__ == compat.__name__


def build_dag() -> DAG:
    with DAG(dag_id="aqua_versions", schedule=None) as dag:
        AquaSubmitJobOperator(task_id="export", queries=QUERIES, deferrable=True)
    return dag


def test_the_operator_deep_copies_and_each_copy_has_its_own_stop_flag():
    """Airflow 3.0's dag.test() and clear() deep-copy the DAG; a lock made in __init__ cannot be copied."""
    dag = build_dag()
    operator = dag.task_dict["export"]

    clone = copy.deepcopy(dag).task_dict["export"]
    clone.on_kill()

    assert clone is not operator and clone.queries == operator.queries
    assert clone._stopped.is_set()
    assert not operator._stopped.is_set()


def test_the_operator_serializes_without_pickle():
    """The DAG processor stores DAGs as JSON: the operator must go through Airflow's serializer."""
    serializer = getattr(serialized_objects, "DagSerialization", serialized_objects.SerializedDAG)

    data = serializer.to_dict(build_dag())
    task = serializer.from_dict(json.loads(json.dumps(data))).task_dict["export"]

    assert task.task_type == "AquaSubmitJobOperator"
    assert "_stopped" not in json.dumps(data)


@pytest.mark.skipif(not SHIMMED_AGET_CONNECTION, reason="this Airflow has BaseHook.aget_connection")
def test_the_aget_connection_shim_looks_up_off_the_event_loop():
    threads = []

    def lookup(conn_id: str) -> str:
        threads.append(threading.get_ident())
        return f"connection {conn_id}"

    async def main() -> tuple[str, int]:
        return await ZuoraAquaHook.aget_connection("zuora_aqua_x"), threading.get_ident()

    with mock.patch.object(ZuoraAquaHook, "get_connection", side_effect=lookup):
        connection, loop_thread = asyncio.run(main())

    assert connection == "connection zuora_aqua_x"
    assert threads and threads[0] != loop_thread


@pytest.mark.skipif(not SHIMMED_AMASK_SECRET, reason="this Airflow has amask_secret")
def test_the_amask_secret_shim_masks_off_the_event_loop():
    calls = []

    def mask(secret: str, name: str | None = None) -> None:
        calls.append((secret, name, threading.get_ident()))

    async def main() -> int:
        await compat.amask_secret("s3cret", "token")
        return threading.get_ident()

    with mock.patch.object(compat, "mask_secret", side_effect=mask):
        loop_thread = asyncio.run(main())

    [(secret, name, thread)] = calls
    assert (secret, name) == ("s3cret", "token")
    assert thread != loop_thread
