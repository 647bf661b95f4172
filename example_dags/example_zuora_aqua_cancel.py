"""
Cancel a Zuora AQuA job by id, taken from the XCom of the task that submitted it.

``submit_export`` submits an export and returns without waiting; it records the job id under
the XCom key ``aqua_job_id``. ``cancel_export`` cancels that job. A job that had already
finished is logged as a warning (set ``fail_if_finished=True`` to fail instead).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_zuora_aqua.operators.aqua import AquaCancelJobOperator, AquaSubmitJobOperator

with DAG(
    dag_id="example_zuora_aqua_cancel",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "zuora"],
) as dag:
    # [START howto_operator_zuora_aqua_submit_job_no_wait]
    submit_export = AquaSubmitJobOperator(
        task_id="submit_export",
        job_name="invoices-{{ ds_nodash }}",
        queries={
            "invoices": "select Id, InvoiceNumber, Amount, Balance, UpdatedDate from Invoice",
            "payments": "select Id, PaymentNumber, Amount, Status from Payment",
        },
        wait_for_completion=False,
    )
    # [END howto_operator_zuora_aqua_submit_job_no_wait]

    # [START howto_operator_zuora_aqua_cancel_job]
    cancel_export = AquaCancelJobOperator(
        task_id="cancel_export",
        job_id="{{ ti.xcom_pull(task_ids='submit_export', key='aqua_job_id') }}",
    )

    submit_export >> cancel_export
    # [END howto_operator_zuora_aqua_cancel_job]
