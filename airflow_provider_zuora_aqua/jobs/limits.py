"""
Zuora's limits on one AQuA query, and how a failed job says it hit the time limit.

- Processing time: "The maximum processing time per query is 3 hours. If a query in an AQuA job is
  executed for longer than 3 hours, this job will be killed automatically."
  https://docs.zuora.com/en/zuora-platform/data/aggregate-query-api-aqua/aqua-api-introduction/limits
- File size: "The maximum export file size is 2047MB"; a larger one answers ``403`` with
  ``<security:max-object-size>2047MB</security:max-object-size>`` at download.
  https://docs.zuora.com/en/zuora-platform/integration/apis/soap-api/soap-api-object-reference/export/usage
- The codes of a query that ran too long, from Zuora's "AQuA API error codes":
  https://docs.zuora.com/en/zuora-platform/data/aggregate-query-api-aqua/aqua-api-error-codes

No HTTP here: the job JSON is read as the hook returned it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

#: Zuora's codes for a query stopped by the processing-time limit:
#: 90007 "The query execution has been aborted.", 90027 "The query exceeded maximum processing
#: time.", 90029 "The job was marked as Error as it exceeded maximum time limit in Processing status."
TIME_LIMIT_CODES = frozenset({"90007", "90027", "90029"})
# Zuora's messages for those codes (any case), a code written inside a message, and the
# simulator's wording ("Query execution exceeded the maximum time limit of 3 hours").
_TIME_LIMIT_MESSAGE = re.compile(
    r"(?<!\d)(?:" + "|".join(sorted(TIME_LIMIT_CODES)) + r")(?!\d)"
    r"|exceeded\s+(?:the\s+)?maximum\s+(?:processing\s+)?time"
    r"|query\s+execution\s+has\s+been\s+aborted",
    re.IGNORECASE,
)
# Where AQuA puts a code: its error bodies say "errorCode", Zuora's general shape "code".
_CODE_FIELDS = ("errorCode", "code")
# A cancelled batch was stopped by a cancel, not by Zuora's limit.
_FAILED_STATUSES = frozenset({"aborted", "error", "failed"})


class ZuoraLimit(Enum):
    """A limit of Zuora's that a window's query can hit; halving the window is the remedy."""

    FILE_SIZE = "its result file is over Zuora's 2,047 MB file size cap"
    PROCESSING_TIME = "its query runs past Zuora's 3 hours of processing time"

    @property
    def description(self) -> str:
        return self.value


def ran_too_long(job: Mapping[str, Any]) -> bool:
    """
    Whether a failed job, or one of its failed batches, says its query hit Zuora's processing-time
    limit, by a code field (``errorCode``, ``code``) or by its ``message``.

    A completed batch, a cancelled one and any other failure (a syntax error, 90005) did not.
    """
    batches = job.get("batches")
    failed = [batch for batch in (batches if isinstance(batches, list) else []) if isinstance(batch, Mapping)]
    return any(_says_too_long(part) for part in [job, *failed] if _failed(part.get("status")))


def _failed(status: object) -> bool:
    return str(status or "").strip().lower() in _FAILED_STATUSES


def _says_too_long(part: Mapping[str, Any]) -> bool:
    if any(str(part.get(field, "")).strip() in TIME_LIMIT_CODES for field in _CODE_FIELDS):
        return True
    message = part.get("message")
    return isinstance(message, str) and _TIME_LIMIT_MESSAGE.search(message) is not None
