"""
Building the sync client where it is first used, safe against ``fork()``.

The client's module (with ``requests`` and ``urllib3``) is imported on first use only: DAG files
import the hook at every parse. But a process forked while another of its threads imports a
module inherits that module's import lock held, and hangs when it imports the module itself
(Celery and LocalExecutor workers fork). So a fork waits for a build in progress (an import and
a constructor, no I/O), and a forked child starts with the lock free.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_zuora_aqua.client.answers import CallRecord
    from airflow_provider_zuora_aqua.client.auth import Log
    from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings
    from airflow_provider_zuora_aqua.client.sync_client import AquaClient

# Re-entrant: the building thread itself may fork (nothing in a build does, but a fork must never
# deadlock on its own thread).
_building = threading.RLock()


def build_sync_client(settings: AquaConnectionSettings, *, log: Log, record: CallRecord | None = None) -> AquaClient:
    """A new :class:`~.sync_client.AquaClient`, its module imported here if it was not yet."""
    with _building:
        from airflow_provider_zuora_aqua.client.sync_client import AquaClient

        return AquaClient(settings, log=log, record=record)


def _before_fork() -> None:
    _building.acquire()


def _after_fork_in_parent() -> None:
    _building.release()


def _after_fork_in_child() -> None:
    global _building
    _building = threading.RLock()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
