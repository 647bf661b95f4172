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


# -- one asset event per published window ------------------------------------------------------

#: The keys of a window's asset event: what the incremental export returns for the window.
WINDOW_EVENT_KEYS = ("query", "window", "manifest", "records", "job_id")


def query_folder_uri(manifest_uri: str) -> str:
    """The folder of a query's windows, from the URI of one of its manifests (``<folder>/<window>/_manifest.json``)."""
    folder, _, _ = manifest_uri.rstrip("/").rsplit("/", 2)
    return folder


def window_asset_of(manifest_uri: str) -> Any:
    """The asset of a query's windows: ``Asset(uri=<destination>/<query>)``, named by its URI."""
    from airflow.sdk import Asset

    uri = query_folder_uri(manifest_uri)
    return Asset(name=uri, uri=uri)


def window_asset(destination: object, query: str, destination_conn_id: str | None = None) -> Any:
    """
    The asset whose events announce the published windows of ``query`` under ``destination``
    (what :func:`record_window_events` emits on): schedule a consumer DAG on it.

    :param destination: the export's ``destination`` (a folder, a URI or an ``ObjectStoragePath``).
    :param query: the query's name (its folder).
    :param destination_conn_id: the export's ``destination_conn_id`` (not part of the URI).
    """
    from airflow.sdk import Asset

    from airflow_provider_zuora_aqua.results.destination import resolve_destination

    uri = resolve_destination(destination, destination_conn_id).child(query).uri
    return Asset(name=uri, uri=uri)


def window_event_extra(window: Mapping[str, Any]) -> dict[str, Any]:
    """One window's event extra: ``query``, ``window`` (cursor, start, end), ``manifest``, ``records``, ``job_id``."""
    return {key: window.get(key) for key in WINDOW_EVENT_KEYS}


def record_window_events(
    context: Mapping[str, Any], outlets: Iterable[object], windows: Sequence[Mapping[str, Any]]
) -> None:
    """
    Announce the windows an incremental export published on the task's outlets.

    * Each asset outlet gets one event, as before: ``{"windows": [...], "records": total}``.
    * Each asset alias outlet gets one event per window, on the asset of the window's query
      (:func:`window_asset`), with :func:`window_event_extra` of the window as its extra. Airflow
      makes one event per distinct extra added through an alias, and each window's extra names its
      own manifest: N windows, N events.

    Airflow (3.0 to 3.3 at least) hands a consumer run only the events registered up to the first
    one that queued it: the other windows of the same task come with the consumer's next run. A
    consumer reads them at once from ``inlet_events`` (see the downstream guide).
    """
    from airflow.sdk import AssetAlias

    events = context.get("outlet_events")
    if events is None:
        return
    outlets = list(outlets or ())
    record_outlet_extras(
        context, outlets, {"windows": list(windows), "records": sum(int(w.get("records") or 0) for w in windows)}
    )
    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            for window in windows:
                events[outlet].add(window_asset_of(str(window["manifest"])), extra=window_event_extra(window))
