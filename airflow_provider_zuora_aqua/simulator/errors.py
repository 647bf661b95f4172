"""Zuora's error codes and error bodies, as the simulator answers them."""

from __future__ import annotations

import secrets
from typing import Any

# AQuA's own codes, from Zuora's "AQuA API error codes" table. AQuA sends them as strings.
INVALID_JOB_ID = "90002"
INVALID_JOB_ID_FOR_CANCELLATION = "90003"
TOO_MANY_QUERIES = "90004"
QUERY_SYNTAX_ERROR = "90005"
STATELESS_DELETED_UNSUPPORTED = "90012"
NOTIFY_URL_TOO_LONG = "90014"
INVALID_INCREMENTAL_TIME = "90015"
NO_QUERIES = "90016"
CONCURRENT_JOB_LIMIT = "90028"
# Zuora's table has no code for a bad field value (unknown format, name too long, ...);
# the simulator answers those with this one so clients still see an AQuA-shaped error.
INVALID_FIELD = "90000"

#: The message of a batch that the simulator aborts for running past Zuora's 3-hour query limit
#: (``max_query_rows``). Zuora's exact wording is not documented; clients that split a window on
#: a query timeout should match on "exceeded the maximum time limit".
QUERY_TIME_LIMIT_MESSAGE = "Query execution exceeded the maximum time limit of 3 hours"

# Zuora's general 8-digit codes: resource 500000 (generic) plus a category.
GENERAL_PERMISSION_DENIED = 50000010
GENERAL_INVALID_VALUE = 50000020
GENERAL_NOT_FOUND = 50000040
GENERAL_UNSUPPORTED_REQUEST = 50000045
GENERAL_LOCKING_CONTENTION = 50000050
GENERAL_INTERNAL_ERROR = 50000060
GENERAL_LIMIT_EXCEEDED = 50000070
GENERAL_MALFORMED_REQUEST = 50000090


class AquaError(Exception):
    """An AQuA refusal: answered as ``{"errorCode": ..., "message": ...}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        """The JSON body AQuA sends for this error."""
        return {"errorCode": self.code, "message": self.message}


def invalid_job_id() -> AquaError:
    """The refusal for a job id AQuA does not know."""
    return AquaError(INVALID_JOB_ID, "Invalid Job Id.")


def invalid_job_id_for_cancellation() -> AquaError:
    """The refusal for cancelling a finished or unknown job."""
    return AquaError(INVALID_JOB_ID_FOR_CANCELLATION, "Invalid Job Id for job cancellation.")


def general_error(code: int, message: str) -> dict[str, Any]:
    """Zuora's general error shape, used outside AQuA's own validation."""
    return {
        "success": False,
        "processId": secrets.token_hex(8).upper(),
        "reasons": [{"code": code, "message": message}],
    }
