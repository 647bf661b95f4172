"""The one retry policy of every AQuA call, for tenacity's ``Retrying`` and ``AsyncRetrying``."""

from __future__ import annotations

import logging
from typing import Any

import tenacity

from airflow_provider_zuora_aqua.client.defaults import MAX_RETRY_WAIT_SECONDS
from airflow_provider_zuora_aqua.client.settings import AquaConnectionSettings
from airflow_provider_zuora_aqua.exceptions import is_retryable

__all__ = ["is_retryable", "retry_policy"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 30.0


class _WaitRetryAfterOrBackoff(tenacity.wait.wait_base):
    """
    Wait what ``Retry-After`` asks for (:func:`~.answers.parse_retry_after` caps it), else an
    exponential backoff with jitter; never longer than :data:`~.defaults.MAX_RETRY_WAIT_SECONDS`
    nor than what is left of the call's ``budget`` (then the policy's stop ends the call instead).
    """

    def __init__(self, backoff: float, budget: float) -> None:
        exponential = tenacity.wait_exponential(multiplier=backoff, max=MAX_RETRY_WAIT_SECONDS)
        self._backoff = exponential + tenacity.wait_random(0, backoff)
        self._budget = budget

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        wait = self._backoff(retry_state) if retry_after is None else float(retry_after)
        left = self._budget - (retry_state.seconds_since_start or 0.0)
        return max(0.0, min(wait, MAX_RETRY_WAIT_SECONDS, left))


def _log_before_sleep(retry_state: tenacity.RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0
    log.warning("AQuA call failed (attempt %d): %s; retrying in %.1f s", retry_state.attempt_number, exc, wait)


def retry_policy(
    settings: AquaConnectionSettings,
    *,
    idempotent: bool = True,
    keyed_submit: bool = False,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """
    Keyword arguments for ``tenacity.Retrying`` / ``tenacity.AsyncRetrying``.

    Bounded by ``max_retries`` attempts after the first and by ``retry_max_seconds`` in total (a
    wait that would pass that budget is not started).

    :param idempotent: see :func:`is_retryable`.
    :param keyed_submit: a submit with an ``Idempotency-Key``; see :func:`is_retryable`.
    :param max_seconds: a tighter total budget, for callers that must be quick (``on_kill``).
    """
    budget = settings.retry_max_seconds if max_seconds is None else min(max_seconds, settings.retry_max_seconds)
    return {
        "retry": tenacity.retry_if_exception(
            lambda exc: is_retryable(exc, idempotent=idempotent, keyed_submit=keyed_submit)
        ),
        "stop": tenacity.stop_after_attempt(settings.max_retries + 1) | tenacity.stop_before_delay(budget),
        "wait": _WaitRetryAfterOrBackoff(settings.retry_backoff, budget),
        "before_sleep": _log_before_sleep,
        "reraise": True,
    }
