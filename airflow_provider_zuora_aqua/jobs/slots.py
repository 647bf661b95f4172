"""
Waiting for a free job slot at the tenant.

Zuora runs at most 50 stateless (and 50 stateful) AQuA jobs at a time per tenant and refuses a
submit past the limit, as a ``429`` or as an error body (code ``90028``): both arrive as
:class:`~airflow_provider_zuora_aqua.exceptions.AquaRateLimitError` at once (the hook never sends
a refused key again). A full tenant is not the task's failure: the submit waits for a slot,
within the task's bound, and is sent again. Each attempt gets a new ``Idempotency-Key``
(recorded before it is sent): the refusal created no job, and Zuora replays a refused key's
answer for 24 hours. Only a key an earlier send may have delivered (its answer lost, then a
``429``) is sent again as it is: a new key could make a second job.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from airflow_provider_zuora_aqua.exceptions import AquaError, AquaRateLimitError

T = TypeVar("T")

#: First wait for a slot; it doubles up to :data:`MAX_SLOT_WAIT_SECONDS`.
FIRST_SLOT_WAIT_SECONDS = 5.0
#: Longest wait between two attempts (AQuA jobs run for minutes: a slot frees in that time).
MAX_SLOT_WAIT_SECONDS = 60.0


def slot_wait(backoff: float, retry_after: object, remaining: float | None) -> float:
    """
    The pause before the next attempt: what ``Retry-After`` asks for (Zuora knows when it will
    take the submit), else the backoff; never past :data:`MAX_SLOT_WAIT_SECONDS` nor the caller's
    deadline. A header is not trusted: a value that is not a finite number of seconds is absent.
    """
    pause = backoff
    if isinstance(retry_after, (int, float)) and math.isfinite(retry_after) and retry_after >= 0:
        pause = float(retry_after)
    pause = min(pause, MAX_SLOT_WAIT_SECONDS)
    return pause if remaining is None else max(0.0, min(pause, remaining))


def submit_until_accepted(
    submit_once: Callable[[], T],
    *,
    deadline: float | None,
    stopped: threading.Event,
    log: Any,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """
    ``submit_once()``, sent again after a wait while the tenant is full.

    :param submit_once: sends the submit (with a new key, recorded first, unless the last one
        may name a job); returns what it answered (the job JSON).
    :param deadline: give up (raise the last refusal) at this ``clock`` instant; None: wait on.
    :param stopped: set by ``on_kill``: the wait ends at once.
    :raises AquaError: the task was stopped while it waited.
    """
    wait = FIRST_SLOT_WAIT_SECONDS
    while True:
        try:
            return submit_once()
        except AquaRateLimitError as exc:
            remaining = None if deadline is None else deadline - clock()
            if remaining is not None and remaining <= 0:
                raise
            pause = slot_wait(wait, exc.retry_after, remaining)
            log.warning(
                "Zuora refused the submit: the tenant's concurrent AQuA jobs are at their limit, or calls are "
                "rate limited (%s); sending it again in %.0f s",
                exc,
                pause,
            )
            if stopped.wait(pause):
                raise AquaError("Stopped waiting for a free AQuA job slot: the task was killed") from None
            wait = min(wait * 2, MAX_SLOT_WAIT_SECONDS)
