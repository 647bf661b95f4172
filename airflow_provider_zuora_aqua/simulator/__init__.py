"""A faithful local stand-in for Zuora's AQuA REST API (stdlib only).

In process::

    with AquaSimulator(client_id="id", client_secret="secret", job_seconds=1.0) as sim:
        ...  # point a client at sim.base_url

As a process: ``python -m airflow_provider_zuora_aqua.simulator --help``.
"""

from __future__ import annotations

from .recording import RecordedRequest
from .server import AquaSimulator

__all__ = ["AquaSimulator", "RecordedRequest"]
