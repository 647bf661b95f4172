"""Lineage of delivered files."""

from __future__ import annotations

from airflow_provider_zuora_aqua.results.lineage import job_queries, outlet_extra, query_objects, zuora_namespace


class TestLineage:
    def test_query_objects(self):
        queries = [
            "select Id from Account",
            "SELECT a.Id FROM   Invoice where Name = 'from Payment'",
            "select Id from account",
            'select Id from Subscription where x = "from Usage"',
            "select Id from Account",
            None,
        ]
        assert query_objects(queries) == ["Account", "Invoice", "account", "Subscription"]

    def test_namespace_extra_and_job_queries(self):
        assert zuora_namespace("https://rest.test.zuora.com") == "zuora://rest.test.zuora.com"
        assert job_queries({"batches": [{"query": "select Id from A"}, {"name": "x"}]}) == ["select Id from A"]
        files = [{"uri": "file:///a", "records": 2}, {"uri": "s3://b/c", "records": 3}]
        assert outlet_extra("job-1", files) == {
            "aqua_job_id": "job-1",
            "files": ["file:///a", "s3://b/c"],
            "records": 5,
        }
