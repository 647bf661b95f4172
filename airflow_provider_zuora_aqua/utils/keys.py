"""The names under which tasks record their AQuA jobs: XCom keys and task state store keys.

One place, because the operator writes them and the failure callback, the retry and external
tools read them.
"""

from __future__ import annotations

#: XCom key (and task state store key) under which a task records the id of its AQuA job.
AQUA_JOB_ID_XCOM_KEY = "aqua_job_id"
#: XCom key of the rendered connection id the job was submitted with.
AQUA_CONN_ID_XCOM_KEY = "aqua_conn_id"
#: Task state store key of the ``Idempotency-Key`` of a try's submit, recorded before it is sent.
AQUA_SUBMIT_KEY_STATE_KEY = "aqua_submit_key"
#: Task state store key of the body of that submit, so that a retry can send it again unchanged.
AQUA_SUBMIT_BODY_STATE_KEY = "aqua_submit_body"
#: XCom key of a submit about to be sent (``{"key", "body", "conn_id"}``): a failure callback
#: that finds no job id sends that keyed submit again to learn the job, then cancels it.
AQUA_SUBMIT_XCOM_KEY = "aqua_submit"
