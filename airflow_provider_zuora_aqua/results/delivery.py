"""Download every result file of a job into one folder, verified, with a manifest written last.

File names come from batch (query) names, made safe:

1. Every run of characters other than ``A-Z a-z 0-9 . _ -`` becomes ``_``; leading and
   trailing ``.``, ``_`` and ``-`` are dropped, and the name is cut to 100 characters. So
   ``../../x`` becomes ``x`` and ``/etc/passwd`` becomes ``etc_passwd``: no name can leave
   the folder or hide in it. A name left empty becomes ``batch<N>`` (N counts batches from 1).
2. Two batches never share a name: the second ``accounts`` becomes ``accounts-2``, then
   ``accounts-3``, comparing names case-insensitively (for case-insensitive filesystems).
3. The extension comes from the job's format: ``.csv``, ``.csv.gz`` (gzip) or ``.zip``.
4. A batch split into segments gets one file per segment, ``.partN`` before the extension,
   N from 1 in Zuora's order: ``accounts.part1.csv.gz``, ``accounts.part2.csv.gz``.

The folder gets ``_manifest.json`` last, once every file is in place: its presence means the
export is complete. The same manifest is returned, as a :class:`Manifest`, whose JSON is::

    {"job_id": ..., "destination": <folder URI>,
     "files": [{"batch", "file_id", "uri", "format", "bytes", "records", "sha256"}, ...]}

(segment entries also carry ``segment``: N). Each batch's records are checked against its
``recordCount`` (for segments, their sum) before any of its files is published.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_zuora_aqua.exceptions import AquaError, AquaIntegrityError
from airflow_provider_zuora_aqua.jobs.request import FORMATS
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus, batches_of
from airflow_provider_zuora_aqua.results.staging import Destination, StagedFile, resolve_destination

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
EXTENSIONS = {"csv": ".csv", "gzip": ".csv.gz", "zip": ".zip"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EDGE = "._-"
_MAX_NAME = 100


class FileFetcher(Protocol):
    """
    Streams one result file into a staged file, verified, and says what it wrote (``file_id``,
    ``uri``, ``format``, ``bytes``, ``records``, ``sha256``): ``ZuoraAquaHook.fetch_file``.
    """

    def __call__(
        self,
        file_id: str,
        staged: StagedFile,
        *,
        track_id: str | None,
        expected_records: int | None,
        file_format: str | None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Manifest:
    """
    What one delivery wrote: the job, the folder (its URI) and an entry per file, in batch order.

    Each entry is ``{"batch", "file_id", "uri", "format", "bytes", "records", "sha256"}``, and
    ``segment`` (N) for a file of a segmented batch. :meth:`to_json` is ``_manifest.json``.
    """

    job_id: str | None
    destination: str
    files: Sequence[Mapping[str, Any]]
    #: What the caller says the files are, written beside them (the incremental export: ``query``, ``window``).
    labels: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.labels,
            "job_id": self.job_id,
            "destination": self.destination,
            "files": [dict(file) for file in self.files],
        }

    @property
    def records(self) -> int:
        """The data records of every file."""
        return sum(int(file.get("records") or 0) for file in self.files)


def safe_file_stem(batch_name: object, index: int) -> str:
    """A batch name reduced to a plain, visible file name stem (rule 1 of the module docs)."""
    stem = _UNSAFE.sub("_", str(batch_name or "")).strip(_EDGE)[:_MAX_NAME].rstrip(_EDGE)
    return stem or f"batch{index}"


def job_file_format(job: dict[str, Any]) -> str:
    """The job's result format, lowercase; refuse a format no file name can be given for."""
    file_format = str(job.get("format") or "").strip().lower()
    if file_format not in FORMATS:
        raise AquaError(
            f"AQuA job {job.get('id')} has result format {job.get('format')!r}; the download knows {', '.join(FORMATS)}"
        )
    return file_format


def plan_files(job: dict[str, Any]) -> list[dict[str, Any]]:
    """
    The files of the job's completed batches: ``batch``, ``file_id``, ``name`` (and ``segment``),
    grouped per batch with the batch's ``recordCount`` as ``expected``.
    """
    extension = EXTENSIONS[job_file_format(job)]
    taken: set[str] = set()
    plan = []
    for index, batch in enumerate(batches_of(job), start=1):
        if AquaJobStatus.normalize(batch.get("status")) != AquaJobStatus.COMPLETED:
            continue
        stem = _unique(safe_file_stem(batch.get("name"), index), taken)
        segments = batch.get("segments")
        if segments is not None and not (isinstance(segments, list) and all(isinstance(f, str) for f in segments)):
            # A hostile answer: a string would be read character by character as file ids.
            raise AquaError(
                f"AQuA job {job.get('id')}: batch {batch.get('name')!r} has segments that are not a list of file ids"
            )
        if segments:
            files = [
                {"file_id": file_id, "name": f"{stem}.part{number}{extension}", "segment": number}
                for number, file_id in enumerate(segments, start=1)
            ]
        elif batch.get("fileId"):
            files = [{"file_id": batch["fileId"], "name": f"{stem}{extension}"}]
        else:
            raise AquaError(
                f"AQuA job {job.get('id')}: completed batch {batch.get('name')!r} has no fileId or segments"
            )
        plan.append({"batch": batch.get("name"), "expected": _record_count(job, batch), "files": files})
    return plan


def download_job_results(
    fetch_file: FileFetcher,
    job: dict[str, Any],
    destination: object,
    *,
    destination_conn_id: str | None = None,
    track_id: str | None = None,
    labels: Mapping[str, Any] | None = None,
) -> Manifest:
    """
    Download every file of every completed batch of ``job`` into the folder ``destination``.

    Each batch's files are staged, checked against its ``recordCount``, then published
    together; ``_manifest.json`` is written last. A failed check raises
    :class:`AquaIntegrityError` and publishes nothing of that batch, nor the manifest.

    :param fetch_file: streams one file into a staged file (``hook.fetch_file``).
    :param destination: a local folder, a ``file://`` or object storage URI (``s3://bucket/prefix/``)
        or an ``airflow.sdk.ObjectStoragePath``.
    :param destination_conn_id: the Airflow connection of the object store.
    :param labels: fields written into the manifest beside the module's (they cannot replace them).
    :return: the manifest (see the module docs).
    """
    folder = resolve_destination(destination, destination_conn_id)
    file_format = job_file_format(job)
    plan = plan_files(job)
    files: list[dict[str, Any]] = []
    for batch in plan:
        files.extend(_download_batch(fetch_file, folder, batch, file_format, track_id))
    manifest = Manifest(job_id=job.get("id"), destination=folder.uri, files=files, labels=dict(labels or {}))
    with StagedFile(folder.child(MANIFEST_NAME)) as staged:
        staged.write(json.dumps(manifest.to_json(), indent=2).encode("utf-8"))
        staged.publish()
    log.info("AQuA job %s: %d files written to %s", job.get("id"), len(files), folder.uri)
    return manifest


def _download_batch(
    fetch_file: FileFetcher, folder: Destination, batch: dict[str, Any], file_format: str, track_id: str | None
) -> list[dict[str, Any]]:
    single = len(batch["files"]) == 1 and "segment" not in batch["files"][0]
    entries = []
    with ExitStack() as stack:
        staged_files = []
        for planned in batch["files"]:
            staged = stack.enter_context(StagedFile(folder.child(planned["name"])))
            result = fetch_file(
                planned["file_id"],
                staged,
                track_id=track_id,
                expected_records=batch["expected"] if single else None,
                file_format=file_format,
            )
            entry = {"batch": batch["batch"], **result}
            if "segment" in planned:
                entry["segment"] = planned["segment"]
            entries.append(entry)
            staged_files.append(staged)
            if not single:
                staged.park()  # an object store holds the verified segments, not the local disk
        records = sum(entry["records"] for entry in entries)
        if not single and batch["expected"] is not None and records != batch["expected"]:
            raise AquaIntegrityError(
                f"AQuA batch {batch['batch']!r}: its {len(entries)} segments ("
                f"{', '.join(entry['file_id'] for entry in entries)}) hold {records} records, but Zuora reported "
                f"{batch['expected']}; none of them was published"
            )
        for staged in staged_files:
            staged.publish()
    return entries


def _record_count(job: dict[str, Any], batch: dict[str, Any]) -> int | None:
    count = batch.get("recordCount")
    if count is None:
        return None
    try:
        return int(count)
    except (TypeError, ValueError):
        raise AquaError(
            f"AQuA job {job.get('id')}: batch {batch.get('name')!r} has recordCount {count!r}, not a number"
        ) from None


def _unique(stem: str, taken: set[str]) -> str:
    candidate, number = stem, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}-{number}"
    taken.add(candidate.lower())
    return candidate
