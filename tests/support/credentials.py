"""The simulator's credentials and the connection that points at it, shared by the suites."""

from __future__ import annotations

import json

CLIENT_ID = "e2e-client-id-7f3a"
CLIENT_SECRET = "e2e-client-secret-0c1d9b8a"
CONN_ID = "zuora_aqua_default"


def connection_json(base_url: str, **extra: object) -> str:
    """An ``AIRFLOW_CONN_*`` value for the simulator, with quick retries for tests."""
    extras = {"retry_backoff": 0.05, "max_retries": 3, "timeout": 10, **extra}
    return json.dumps(
        {
            "conn_type": "zuora_aqua",
            "host": base_url,
            "login": CLIENT_ID,
            "password": CLIENT_SECRET,
            "extra": extras,
        }
    )
