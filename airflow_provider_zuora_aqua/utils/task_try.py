"""Identifiers derived from the task try that makes a call (Airflow-aware; the wire rules are in protocol)."""

from __future__ import annotations

from typing import Any

from airflow_provider_zuora_aqua.utils.protocol import make_track_id


def task_track_id(ti: Any) -> str:
    """A Track-Id naming the task try that makes the call: dag, task, map index, run, try."""
    map_index = getattr(ti, "map_index", -1)
    task = ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}[{map_index}]"
    return make_track_id("airflow", ti.dag_id, task, ti.run_id, ti.try_number)
