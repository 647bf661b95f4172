"""
Imports that moved between Airflow 3 minor versions, in one place.

Names the ``apache-airflow-providers-common-compat`` provider knows come from it, as in the
official providers; the few it does not know are shimmed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSensorTimeout,
    BaseHook,
    BaseOperator,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
    mask_secret,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

try:
    from airflow.sdk.log import amask_secret
except ImportError:  # Airflow < 3.3: only the sync call, whose supervisor call 3.0 refuses on the event loop.

    async def amask_secret(secret: str, name: str | None = None) -> None:  # type: ignore[misc]
        """
        Mask a secret from async code: the sync call, in a thread that reaches the loop as asgiref does.

        :param secret: The value to mask in logs.
        :param name: The name of the secret, if any.
        """
        from asgiref.sync import sync_to_async

        await sync_to_async(mask_secret)(secret, name)


if not hasattr(BaseHook, "aget_connection"):  # Airflow 3.0

    class BaseHook(BaseHook):  # type: ignore[no-redef]
        """Airflow 3.0's ``BaseHook`` with the async connection lookup that 3.1 added."""

        @classmethod
        async def aget_connection(cls, conn_id: str) -> Connection:
            """
            Look a connection up without blocking the event loop.

            :param conn_id: The connection id.
            """
            # The sync lookup talks to the supervisor: keep it off the event loop.
            from asgiref.sync import sync_to_async

            return await sync_to_async(cls.get_connection)(conn_id)


__all__ = [
    "AirflowException",
    "AirflowProviderDeprecationWarning",
    "AirflowSensorTimeout",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "PokeReturnValue",
    "amask_secret",
    "conf",
    "mask_secret",
]


def _has_task_state_store() -> bool:
    from airflow import __version__
    from packaging.version import Version

    return Version(Version(__version__).base_version) >= Version("3.3")


#: Airflow 3.3+ keeps ``context["task_state_store"]`` across tries: a retry can re-attach.
HAS_TASK_STATE_STORE = _has_task_state_store()
