"""A faithful local stand-in for Zuora's AQuA REST API (stdlib only).

In process::

    with AquaSimulator(client_id="id", client_secret="secret", job_seconds=1.0) as sim:
        ...  # point a client at sim.base_url

As a process: ``python -m airflow_provider_zuora_aqua.simulator --help``.

With data (see :mod:`.tenant`)::

    sim.tenant.insert("Account", {"Id": "A1", "Name": "Acme", "Status": "Active"})
    sim.tenant.update("Account", "A1", {"Name": "Acme Inc"}, index_delay=120)
"""

from __future__ import annotations

from .errors import QUERY_TIME_LIMIT_MESSAGE
from .recording import RecordedRequest
from .server import AquaSimulator
from .tenant import Tenant, TenantClock

__all__ = ["QUERY_TIME_LIMIT_MESSAGE", "AquaSimulator", "RecordedRequest", "Tenant", "TenantClock"]
