"""The real-Airflow harness, under the import path the tests used before it moved into the package."""

from __future__ import annotations

from airflow_provider_zuora_aqua.testing.airflow_env import (
    AIRFLOW_BIN,
    FULL_STACK_ENV,
    AirflowApiError,
    AirflowHome,
    AirflowStack,
    free_port,
    stop_process_group,
    wait_for,
)

__all__ = [
    "AIRFLOW_BIN",
    "FULL_STACK_ENV",
    "AirflowApiError",
    "AirflowHome",
    "AirflowStack",
    "free_port",
    "stop_process_group",
    "wait_for",
]
