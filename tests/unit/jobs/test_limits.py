"""Which failed AQuA jobs ran past Zuora's 3-hour query limit: by Zuora's codes and messages."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_zuora_aqua.jobs.limits import TIME_LIMIT_CODES, ZuoraLimit, ran_too_long
from airflow_provider_zuora_aqua.simulator.errors import QUERY_TIME_LIMIT_MESSAGE


def job(*batches: dict[str, Any], status: str = "aborted", **fields: Any) -> dict[str, Any]:
    return {"id": "j1", "status": status, "batches": [{"name": "q", **batch} for batch in batches], **fields}


def test_the_codes_are_zuoras_processing_time_codes():
    assert TIME_LIMIT_CODES == {"90007", "90027", "90029"}


@pytest.mark.parametrize(
    "message",
    [
        "The query exceeded maximum processing time.",  # 90027
        "The job was marked as Error as it exceeded maximum time limit in Processing status.",  # 90029
        "The query execution has been aborted.",  # 90007
        "90007",
        "Error 90027: see the logs",
        "errorCode=90029",
        QUERY_TIME_LIMIT_MESSAGE,  # the simulator's
        "THE QUERY EXCEEDED MAXIMUM PROCESSING TIME",
    ],
)
@pytest.mark.parametrize("status", ["aborted", "error", "Error", "failed"])
def test_a_failed_batch_with_a_processing_time_message_ran_too_long(message, status):
    assert ran_too_long(job({"status": "completed", "message": ""}, {"status": status, "message": message}))


@pytest.mark.parametrize("field", ["errorCode", "code"])
@pytest.mark.parametrize("code", ["90027", 90029, " 90007 "])
def test_a_failed_batch_with_a_processing_time_code_field_ran_too_long(field, code):
    assert ran_too_long(job({"status": "error", field: code, "message": "Internal error"}))


def test_a_failed_job_whose_own_code_or_message_says_so_ran_too_long():
    """90029 marks the job itself as Error: its batches may say nothing."""
    assert ran_too_long(job({"status": "executing"}, status="error", errorCode="90029"))
    message = "The job was marked as Error as it exceeded maximum time limit in Processing status."
    assert ran_too_long(job({"status": "pending"}, status="error", message=message))


@pytest.mark.parametrize(
    "batch",
    [
        {"status": "error", "message": "There is a syntax error in one of the queries in the AQuA input."},  # 90005
        {"status": "error", "errorCode": "90005"},
        {"status": "error", "message": "Error 190027 in module 900271"},  # not a code of ours
        {"status": "cancelled", "message": "The query execution has been aborted."},  # the user's cancel
        {"status": "completed", "message": "The query exceeded maximum processing time."},
        {"status": "aborted", "message": ""},  # aborted after another batch ran too long
        {"status": "aborted", "message": None},
        {"status": "error", "message": {"nested": "90027"}},
    ],
)
def test_other_failures_did_not_run_too_long(batch):
    assert not ran_too_long(job(batch))


@pytest.mark.parametrize("batches", [None, "90027", [None, "90027", 7]])
def test_a_hostile_job_is_not_read_as_a_timeout(batches):
    assert not ran_too_long({"id": "j1", "status": "aborted", "batches": batches})


def test_only_what_failed_is_read():
    assert not ran_too_long(job({"status": "completed"}, status="completed", errorCode="90027"))
    # A job Zuora calls completed with a batch that is not: the batch decides.
    assert ran_too_long(job({"status": "error", "errorCode": "90027"}, status="completed"))


def test_each_limit_names_zuoras_number():
    assert "2,047 MB" in ZuoraLimit.FILE_SIZE.description
    assert "3 hours" in ZuoraLimit.PROCESSING_TIME.description


def test_the_module_needs_no_http_client():
    """jobs/ holds rules, not transport: importing limits loads nothing of client/."""
    code = "import sys, airflow_provider_zuora_aqua.jobs.limits; print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "airflow_provider_zuora_aqua.jobs.limits" in loaded
    assert "airflow_provider_zuora_aqua.client" not in loaded
