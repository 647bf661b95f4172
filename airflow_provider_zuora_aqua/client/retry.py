"""The one retry policy of every AQuA call, for tenacity's ``Retrying`` and ``AsyncRetrying``."""

from __future__ import annotations

import logging
from typing import Any

import tenacity

from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings
from airflow_provider_zuora_aqua.exceptions import is_retryable

__all__ = ["is_retryable", "retry_policy"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 30.0


class _WaitRetryAfterOrBackoff(tenacity.wait.wait_base):
    """Wait what ``Retry-After`` asks for, else an exponential backoff with jitter."""

    def __init__(self, backoff: float) -> None:
        self._backoff = tenacity.wait_exponential(multiplier=backoff, max=_MAX_BACKOFF_SECONDS) + tenacity.wait_random(
            0, backoff
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        return self._backoff(retry_state)


def _log_before_sleep(retry_state: tenacity.RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0
    log.warning("AQuA call failed (attempt %d): %s; retrying in %.1f s", retry_state.attempt_number, exc, wait)


def retry_policy(
    settings: AquaConnectionSettings,
    *,
    idempotent: bool = True,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """
    Keyword arguments for ``tenacity.Retrying`` / ``tenacity.AsyncRetrying``.

    Bounded by ``max_retries`` attempts after the first and by ``retry_max_seconds`` in total (a
    wait that would pass that budget is not started).

    :param max_seconds: a tighter total budget, for callers that must be quick (``on_kill``).
    """
    budget = settings.retry_max_seconds if max_seconds is None else min(max_seconds, settings.retry_max_seconds)
    return {
        "retry": tenacity.retry_if_exception(lambda exc: is_retryable(exc, idempotent=idempotent)),
        "stop": tenacity.stop_after_attempt(settings.max_retries + 1) | tenacity.stop_before_delay(budget),
        "wait": _WaitRetryAfterOrBackoff(settings.retry_backoff),
        "before_sleep": _log_before_sleep,
        "reraise": True,
    }
