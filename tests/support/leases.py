"""What the destination-lease tests share: named holders, a holder long dead, and a race of writers."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from airflow_provider_zuora_aqua.incremental.lease import DestinationLease, LeaseHolder, utc_now
from airflow_provider_zuora_aqua.results.destination import Destination


def holder(name: str, try_number: int = 1) -> LeaseHolder:
    return LeaseHolder(
        dag_id=f"dag_{name}", task_id="export", run_id=f"manual__{name}", try_number=try_number, host=f"host-{name}"
    )


def two_hours_ago() -> datetime:
    """A holder's clock that makes its lease expired as soon as written (a holder that died long ago)."""
    return utc_now() - timedelta(hours=2)


def race(folder: Destination, writers: int, join_seconds: float = 20) -> list[DestinationLease | BaseException]:
    """``writers`` threads acquiring the lease of ``folder`` together; what each got."""
    start = threading.Barrier(writers)
    outcomes: list[DestinationLease | BaseException] = []

    def take(name: str) -> None:
        start.wait()
        try:
            outcomes.append(DestinationLease.acquire(folder, holder(name), renew=False))
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=take, args=(f"w{index}",)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join_seconds)
    assert len(outcomes) == writers
    return outcomes
