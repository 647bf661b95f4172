"""Lineage of an AQuA export: OpenLineage datasets, and the extras of the task's asset events.

Inputs are the Zuora objects that the queries read (the ``FROM`` clause), in the namespace
``zuora://<REST host>``: ``select Id from Account`` reads ``Account``. Outputs are the files
written, named as OpenLineage names files (``file`` + path, ``s3://bucket`` + key, ...), each
with its record count and size.

OpenLineage is optional (``pip install airflow-provider-zuora-aqua[openlineage]``): it is
imported inside the functions that need it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_zuora_aqua.results.destination import lineage_dataset_name

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_zuora_aqua.results.delivery import Manifest

ZUORA_SCHEME = "zuora"
_FROM_OBJECT = re.compile(r"\bfrom\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
# String literals may hold the word "from": blank them out before looking for the clause.
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)


def query_objects(queries: Iterable[object]) -> list[str]:
    """The Zuora objects named in the queries' ``FROM`` clauses, each once, in order."""
    objects: list[str] = []
    for query in queries:
        found = _FROM_OBJECT.search(_LITERAL.sub("''", str(query or "")))
        if found is not None and found.group(1) not in objects:
            objects.append(found.group(1))
    return objects


def job_queries(job: Mapping[str, Any]) -> list[str]:
    """The ZOQL of every batch of a job JSON."""
    return [str(batch["query"]) for batch in job.get("batches") or [] if batch.get("query")]


def zuora_namespace(base_url: str) -> str:
    """``zuora://<REST host>`` of a tenant's REST base URL (``https://rest.zuora.com`` → ``zuora://rest.zuora.com``)."""
    return f"{ZUORA_SCHEME}://{urlsplit(base_url).netloc}"


def export_lineage(base_url: str, deliveries: Iterable[tuple[Mapping[str, Any], Manifest | None]]) -> OperatorLineage:
    """
    The ``OperatorLineage`` of what a task delivered: Zuora objects in, written files out.

    :param base_url: the tenant's REST base URL.
    :param deliveries: each job JSON (its batches name the queries) with the manifest of the
        files it delivered (``uri``, ``records``, ``bytes`` of each), or None: none downloaded.
        The incremental export delivers one per window.
    """
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    namespace = zuora_namespace(base_url)
    queries: list[str] = []
    outputs = []
    for job, manifest in deliveries:
        queries += job_queries(job)
        for file in manifest.files if manifest is not None else ():
            file_namespace, name = lineage_dataset_name(file["uri"])
            statistics = OutputStatisticsOutputDatasetFacet(rowCount=file.get("records"), size=file.get("bytes"))
            outputs.append(
                OutputDataset(namespace=file_namespace, name=name, outputFacets={"outputStatistics": statistics})
            )
    return OperatorLineage(
        inputs=[Dataset(namespace=namespace, name=name) for name in query_objects(queries)],
        outputs=outputs,
    )


def outlet_extra(job_id: object, files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The extra of each outlet's asset event: ``aqua_job_id``, ``files`` (URIs) and total ``records``."""
    return {
        "aqua_job_id": job_id,
        "files": [file["uri"] for file in files],
        "records": sum(int(file.get("records") or 0) for file in files),
    }


def record_outlet_extras(context: Mapping[str, Any], outlets: Iterable[object], extra: Mapping[str, Any]) -> None:
    """
    Put ``extra`` (:func:`outlet_extra` of a manifest, or the incremental export's windows) on
    the asset event of each of the task's outlets (``context["outlet_events"]``).

    Asset aliases are left alone: which asset an alias stands for is the DAG author's choice.
    """
    from airflow.sdk import AssetAlias

    events = context.get("outlet_events")
    if events is None:
        return
    for outlet in outlets or ():
        if not isinstance(outlet, AssetAlias):
            events[outlet].extra.update(extra)
