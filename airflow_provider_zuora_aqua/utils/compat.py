"""Imports that moved between Airflow 3 minor versions."""

from __future__ import annotations

from airflow.sdk.log import mask_secret

try:
    from airflow.sdk import conf
except ImportError:  # Airflow < 3.2
    from airflow.configuration import conf  # type: ignore[no-redef]

try:
    from airflow.sdk.log import amask_secret
except ImportError:  # Airflow < 3.2 has only the sync call, which the event loop tolerates there.

    async def amask_secret(secret: str, name: str | None = None) -> None:  # type: ignore[misc]
        mask_secret(secret, name)


__all__ = ["amask_secret", "conf", "mask_secret"]
