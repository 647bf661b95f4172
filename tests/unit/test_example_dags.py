"""The shipped example DAGs parse in Airflow's own DagBag, as the DAG processor would load them."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow before DagBag moved to dag_processing
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
EXPECTED = {
    "example_zuora_aqua_cancel": {"submit_export", "cancel_export"},
    "example_zuora_aqua_export": {"export_accounts"},
    "example_zuora_aqua_incremental": {"zuora_changes"},
    # example_zuora_aqua_load_sql.py: the export that announces windows, and the load scheduled on them.
    "zuora_account_changes": {"export_accounts"},
    "example_zuora_aqua_load_sql": {"create_tables", "load_windows"},
    "example_zuora_aqua_object_storage": {"export_accounts", "download_accounts"},
    "example_zuora_aqua_results": {"export_accounts", "submit_invoices", "wait_for_invoices", "download_invoices"},
}


@pytest.fixture(scope="module")
def dag_bag() -> DagBag:
    # Airflow 3.0's DagBag also loads Airflow's own examples unless [core] load_examples is off.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        return DagBag(dag_folder=EXAMPLE_DAGS, safe_mode=False)


def test_every_example_dag_imports_without_errors(dag_bag: DagBag) -> None:
    assert dag_bag.import_errors == {}
    dag_files = {Path(dag.fileloc).name for dag in dag_bag.dags.values()}
    assert dag_files == {path.name for path in EXAMPLE_DAGS.glob("*.py")}


def test_the_expected_dags_and_tasks(dag_bag: DagBag) -> None:
    assert {dag_id: {task.task_id for task in dag.tasks} for dag_id, dag in dag_bag.dags.items()} == EXPECTED
