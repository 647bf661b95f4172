"""Job status rules and the waiting policy."""

from __future__ import annotations

import random

import pytest

from airflow_provider_zuora_aqua.exceptions import (
    AquaApiError,
    AquaAuthenticationError,
    AquaConfigurationError,
    AquaError,
    AquaInvalidAnswerError,
    AquaJobNotFoundError,
    AquaRateLimitError,
    AquaServerError,
    AquaTransportError,
)
from airflow_provider_zuora_aqua.jobs.status import FIRST_POLL_SECONDS, POLL_JITTER, JobWatch
from airflow_provider_zuora_aqua.sensors.aqua import AquaJobSensor
from airflow_provider_zuora_aqua.triggers.aqua import AquaJobTrigger


def test_poll_delays_back_off_to_the_interval_with_jitter():
    from itertools import islice

    from airflow_provider_zuora_aqua.jobs.status import poll_delays

    delays = list(islice(poll_delays(30), 400))
    for delay, base in zip(delays, [2, 4, 8, 16, 30, 30]):
        assert 0.9 * base <= delay <= 1.1 * base
    steady = delays[4:]
    assert len(set(steady)) > 1  # spread, not lockstep
    assert abs(sum(steady) / len(steady) - 30) < 1


JOB_ID = "e20b07474688ad5001468daf10e501de"


class TestIntervals:
    """intervals <= 0 are refused when the trigger or the sensor is built."""

    @pytest.mark.parametrize("interval", [0, -1, 0.0, float("nan")])
    def test_trigger_refuses_a_non_positive_poll_interval(self, interval):
        """AquaJobTrigger(poll_interval<=0) raises, naming poll_interval."""
        with pytest.raises(AquaConfigurationError, match="poll_interval"):
            AquaJobTrigger(job_id=JOB_ID, poll_interval=interval)

    @pytest.mark.parametrize("interval", [0, 0.0])
    def test_sensor_refuses_a_non_positive_poke_interval(self, interval):
        """AquaJobSensor(poke_interval<=0) raises, naming poke_interval."""
        with pytest.raises(AquaConfigurationError, match="poke_interval"):
            AquaJobSensor(task_id="wait", job_id=JOB_ID, poke_interval=interval)

    def test_positive_intervals_are_kept(self):
        """ordinary values pass."""
        assert AquaJobTrigger(job_id=JOB_ID, poll_interval=0.1).poll_interval == 0.1
        assert AquaJobSensor(task_id="wait", job_id=JOB_ID, poke_interval=5).poke_interval == 5


JOB_ID = "2c92c0f86a8dd422016a9e7a70116b0d"


class RecordingLog:
    """The ``log`` a JobWatch writes to, as (level, message) pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(("info", message % args))

    def warning(self, message: str, *args: object) -> None:
        self.lines.append(("warning", message % args))


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def watch(
    *, poll_interval: float = 30.0, deadline: float | None = None, clock: Clock | None = None
) -> tuple[JobWatch, RecordingLog]:
    log = RecordingLog()
    return JobWatch(JOB_ID, poll_interval=poll_interval, deadline=deadline, clock=clock or Clock(), log=log), log


class TestBackoff:
    @pytest.mark.parametrize(("jitter", "factor"), [("low", 1 - POLL_JITTER), ("high", 1 + POLL_JITTER)])
    def test_waits_double_from_two_seconds_to_the_poll_interval_within_the_jitter(
        self, monkeypatch: pytest.MonkeyPatch, jitter: str, factor: float
    ) -> None:
        # Jitter at either end of its range: the waits are exactly the bounds.
        monkeypatch.setattr(random, "uniform", lambda low, high: low if jitter == "low" else high)
        job_watch, _ = watch(poll_interval=30)
        waits = [job_watch.next_wait() for _ in range(7)]
        assert waits == pytest.approx([base * factor for base in (2, 4, 8, 16, 30, 30, 30)])

    def test_waits_are_spread_at_random_within_ten_percent(self) -> None:
        job_watch, _ = watch(poll_interval=30)
        waits = [job_watch.next_wait() for _ in range(200)]
        bases = [2, 4, 8, 16] + [30] * 196
        assert all((1 - POLL_JITTER) * base <= wait <= (1 + POLL_JITTER) * base for wait, base in zip(waits, bases))
        assert len({round(wait, 6) for wait in waits[4:]}) > 1  # not in lockstep

    def test_a_poll_interval_below_the_first_wait_is_the_wait(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(random, "uniform", lambda low, high: 1.0)
        job_watch, _ = watch(poll_interval=0.5)
        assert FIRST_POLL_SECONDS > 0.5
        assert [job_watch.next_wait() for _ in range(3)] == [0.5, 0.5, 0.5]


class TestDeadline:
    def test_no_deadline_never_times_out(self) -> None:
        clock = Clock()
        job_watch, _ = watch(deadline=None, clock=clock)
        clock.now += 10**9
        assert not job_watch.timed_out

    def test_times_out_when_the_clock_reaches_the_deadline(self) -> None:
        clock = Clock(now=1000.0)
        job_watch, _ = watch(deadline=1100.0, clock=clock)
        assert not job_watch.timed_out
        clock.now = 1099.9
        assert not job_watch.timed_out
        clock.now = 1100.0
        assert job_watch.timed_out

    def test_a_wait_never_runs_past_the_deadline(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(random, "uniform", lambda low, high: 1.0)
        clock = Clock(now=1000.0)
        job_watch, _ = watch(poll_interval=30, deadline=1005.0, clock=clock)
        assert job_watch.next_wait() == 2.0  # 5 s left: the backoff's own wait
        clock.now = 1004.0
        assert job_watch.next_wait() == pytest.approx(1.0)  # backoff says 4 s; 1 s is left
        clock.now = 1007.0
        assert job_watch.next_wait() == 0.0  # past the deadline: no negative wait


class TestTolerate:
    @pytest.mark.parametrize(
        "error",
        [
            AquaTransportError("connection reset", request_sent=True),
            AquaTransportError("connection refused", request_sent=False),
            AquaRateLimitError("slow down", status_code=429, retry_after=5),
            AquaServerError("bad gateway", status_code=502),
        ],
        ids=["read-timeout", "refused", "429", "502"],
    )
    def test_transient_failures_keep_the_wait_going_with_a_warning(self, error: AquaError) -> None:
        job_watch, log = watch()
        assert job_watch.tolerate(error) is True
        assert log.lines == [("warning", f"Could not read AQuA job {JOB_ID} ({error}); still waiting for it")]
        assert not job_watch.finished and job_watch.job == {"id": JOB_ID}

    @pytest.mark.parametrize(
        "error",
        [
            AquaJobNotFoundError("no such job", status_code=404),
            AquaAuthenticationError("bad credentials", status_code=401),
            AquaApiError("bad request", status_code=400),
            AquaConfigurationError("bad connection"),
        ],
        ids=["404", "401", "400", "configuration"],
    )
    def test_permanent_failures_end_the_wait_silently(self, error: AquaError) -> None:
        job_watch, log = watch()
        assert job_watch.tolerate(error) is False
        assert log.lines == []  # the caller reports it, once

    def test_an_invalid_answer_is_a_server_failure_and_tolerated(self) -> None:
        job_watch, _ = watch()
        assert job_watch.tolerate(AquaInvalidAnswerError("not JSON", status_code=200)) is True


class TestStatusChanges:
    def test_one_log_line_per_status_change(self) -> None:
        job_watch, log = watch()
        for status in ("submitted", "executing", "executing", "executing", "completed"):
            job_watch.saw({"id": JOB_ID, "status": status})
        assert log.lines == [
            ("info", f"AQuA job {JOB_ID} is submitted"),
            ("info", f"AQuA job {JOB_ID} is executing"),
            ("info", f"AQuA job {JOB_ID} is completed"),
        ]

    def test_finished_only_at_a_terminal_status_in_any_case(self) -> None:
        job_watch, _ = watch()
        assert not job_watch.finished
        job_watch.saw({"id": JOB_ID, "status": "executing"})
        assert not job_watch.finished
        job_watch.saw({"id": JOB_ID, "status": "Completed", "batches": []})
        assert job_watch.finished
        assert job_watch.job == {"id": JOB_ID, "status": "Completed", "batches": []}

    def test_a_failed_read_between_two_reads_keeps_the_last_job(self) -> None:
        job_watch, log = watch()
        job_watch.saw({"id": JOB_ID, "status": "executing"})
        job_watch.tolerate(AquaServerError("unavailable", status_code=503))
        job_watch.saw({"id": JOB_ID, "status": "executing"})
        assert job_watch.job["status"] == "executing"
        assert [level for level, _ in log.lines] == ["info", "warning"]
