"""Download every result file of a job into one folder, verified, with a manifest written last.

File names come from batch (query) names, made safe:

1. Every run of characters other than ``A-Z a-z 0-9 . _ -`` becomes ``_``; leading and
   trailing ``.``, ``_`` and ``-`` are dropped, and the name is cut to 100 characters. So
   ``../../x`` becomes ``x`` and ``/etc/passwd`` becomes ``etc_passwd``: no name can leave
   the folder or hide in it. A name left empty becomes ``batch<N>`` (N counts batches from 1).
2. The extension comes from the job's format: ``.csv``, ``.csv.gz`` (gzip) or ``.zip``.
3. A batch split into segments gets one file per segment, ``.partN`` before the extension,
   N from 1 in Zuora's order: ``accounts.part1.csv.gz``, ``accounts.part2.csv.gz``.
4. No two files share a name, compared case-insensitively (for case-insensitive filesystems),
   and none is ``_manifest.json``: a batch whose stem or any of whose file names is taken gets
   ``-2`` (then ``-3``...) after its stem, so a second ``accounts`` becomes ``accounts-2.csv``
   and a batch ``accounts.part1`` beside a segmented ``accounts`` becomes ``accounts.part1-2.csv``.

The folder gets ``_manifest.json`` last, once every file is in place. The same manifest is
returned, as a :class:`Manifest`, whose JSON is::

    {"job_id": ..., "destination": <folder URI>,
     "files": [{"batch", "file_id", "uri", "format", "bytes", "records", "sha256"}, ...]}

(segment entries also carry ``segment``: N). Each batch's records are checked against its
``recordCount`` (for segments, their sum) before any of its files is published.

A folder that holds an earlier export (a cleared task exporting again into its folder) goes
through these steps, so that at every moment its ``_manifest.json`` either is absent or lists
exactly the files in the folder with their SHA-256, whatever step a crash interrupts:

1. the job is refused before anything is written unless it and all its batches completed;
2. hidden parts that killed runs left (ours by their name, and either of this export's names
   or unmodified for :data:`STALE_PART_SECONDS`) are removed;
3. every file is downloaded and verified under a hidden name;
4. before the first file is published, a hidden journal (:data:`JOURNAL_NAME`) records every
   name of ours the folder may hold from then on (the old manifest's, a stopped run's
   journal's, the new export's), then the old ``_manifest.json`` is removed, for good (the
   folder is fsynced; an object store's delete is final);
5. the files are published, batch by batch;
6. the files the journal names that the new export did not write are removed;
7. the new ``_manifest.json`` is written (a hidden name renamed into place, or one upload),
   then the journal is removed.

A run stopped after step 4 leaves no manifest and a journal: the next run into the folder
removes what it names.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_zuora_aqua.exceptions import AquaError, AquaIntegrityError
from airflow_provider_zuora_aqua.jobs.request import FORMATS
from airflow_provider_zuora_aqua.jobs.status import AquaJobStatus, batches_of, check_job_succeeded
from airflow_provider_zuora_aqua.results.destination import (
    Destination,
    children,
    modified_seconds_ago,
    read_small,
    remove,
    resolve_folder,
    same_file,
)
from airflow_provider_zuora_aqua.results.staging import StagedFile, hidden_part_for, sweep_spools

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
EXTENSIONS = {"csv": ".csv", "gzip": ".csv.gz", "zip": ".zip"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EDGE = "._-"
_MAX_NAME = 100
#: A hidden part unmodified this long is a leftover of a killed run, whatever file it was for.
STALE_PART_SECONDS = 6 * 3600
#: Largest old manifest read (one of ours lists at most 50 batches of 500 segments).
_MAX_OLD_MANIFEST = 16 * 1024 * 1024
#: Hidden record of the names a folder may hold while an export replaces another (see the module docs).
JOURNAL_NAME = ".aqua-replacing.json"


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
    The files of the job's completed batches: ``batch``, ``file_id``, ``name`` (and
    ``segment``), grouped per batch with the batch's ``recordCount`` as ``expected``.
    """
    extension = EXTENSIONS[job_file_format(job)]
    taken = {MANIFEST_NAME.lower()}
    plan = []
    for index, batch in enumerate(batches_of(job), start=1):
        if AquaJobStatus.normalize(batch.get("status")) != AquaJobStatus.COMPLETED:
            continue
        segments = batch.get("segments")
        if segments is not None and not (isinstance(segments, list) and all(isinstance(f, str) for f in segments)):
            # A hostile answer: a string would be read character by character as file ids.
            raise AquaError(
                f"AQuA job {job.get('id')}: batch {batch.get('name')!r} has segments that are not a list of file ids"
            )
        if segments:
            file_ids, segmented = list(segments), True
        elif batch.get("fileId"):
            file_ids, segmented = [batch["fileId"]], False
        else:
            raise AquaError(
                f"AQuA job {job.get('id')}: completed batch {batch.get('name')!r} has no fileId or segments"
            )
        names = _unique_names(safe_file_stem(batch.get("name"), index), len(file_ids), segmented, extension, taken)
        files = [
            {"file_id": file_id, "name": name, **({"segment": number} if segmented else {})}
            for number, (file_id, name) in enumerate(zip(file_ids, names), start=1)
        ]
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
    before_manifest: Callable[[], None] | None = None,
) -> Manifest:
    """
    Download every file of every batch of ``job`` into the folder ``destination``.

    The job and each of its batches must have completed (the rule of
    :func:`~airflow_provider_zuora_aqua.jobs.status.check_job_succeeded`), and ``destination``
    must not be a file: both are checked before any file is requested. Each batch's files are
    staged, checked against its ``recordCount``, then published together; ``_manifest.json``
    is written last. A folder holding an earlier export is replaced as the module docs say.
    A failed check raises :class:`AquaIntegrityError` and publishes nothing of that batch, nor
    the manifest.

    :param fetch_file: streams one file into a staged file (``hook.fetch_file``).
    :param destination: a local folder, a ``file://`` or object storage URI (``s3://bucket/prefix/``)
        or an ``airflow.sdk.ObjectStoragePath``.
    :param destination_conn_id: the Airflow connection of the object store.
    :param labels: fields written into the manifest beside the module's (they cannot replace them).
    :param before_manifest: called right before the manifest is written; what it raises stops
        the publication (the incremental export checks it still holds its lease).
    :return: the manifest (see the module docs).
    :raises AquaJobFailedError: the job or one of its batches did not complete.
    :raises AquaConfigurationError: ``destination`` is an existing file.
    """
    check_job_succeeded(job)
    file_format = job_file_format(job)
    plan = plan_files(job)
    folder = resolve_folder(destination, destination_conn_id)
    names = [planned["name"] for batch in plan for planned in batch["files"]]
    _sweep_leftovers(folder, {*names, MANIFEST_NAME})
    replacing = _Replacing(folder, names)
    files: list[dict[str, Any]] = []
    for batch in plan:
        files.extend(_download_batch(fetch_file, folder, batch, file_format, track_id, replacing.before_publish))
    replacing.before_publish()  # a job without files replaces an older export too
    replacing.remove_files_not_in(names)
    manifest = Manifest(job_id=job.get("id"), destination=folder.uri, files=files, labels=dict(labels or {}))
    if before_manifest is not None:
        before_manifest()
    with StagedFile(folder.child(MANIFEST_NAME)) as staged:
        staged.write(json.dumps(manifest.to_json(), indent=2).encode("utf-8"))
        staged.publish()
    replacing.done()
    log.info("AQuA job %s: %d files written to %s", job.get("id"), len(files), folder.uri)
    return manifest


class _Replacing:
    """
    What an earlier export (or an earlier run that was stopped) left in the folder, and its
    replacement: before the first file is published, a hidden journal (:data:`JOURNAL_NAME`)
    records every name the folder may then hold of ours (the old manifest's, the last
    journal's, the new ones), and the old manifest is removed; after the last file is
    published, the files of that record the new export did not write are removed; once the
    new manifest is in place, the journal goes. So even a run stopped half-way leaves a
    record from which the next run knows what to remove.
    """

    def __init__(self, folder: Destination, names: Sequence[str]) -> None:
        self._folder = folder
        self._names = list(names)
        self._manifest = folder.child(MANIFEST_NAME)
        self._journal = folder.child(JOURNAL_NAME)
        manifest = read_small(self._manifest, _MAX_OLD_MANIFEST)
        journal = read_small(self._journal, _MAX_OLD_MANIFEST)
        self._manifest_present = manifest is not None
        self._old_names = [
            *(_listed_names(manifest) if manifest is not None else []),
            *(_listed_names(journal) if journal is not None else []),
        ]
        self._started = False

    def before_publish(self) -> None:
        if self._started:
            return
        self._started = True
        record = {"files": [{"uri": self._folder.child(name).uri} for name in {*self._old_names, *self._names}]}
        with StagedFile(self._journal) as staged:
            staged.write(json.dumps(record).encode("utf-8"))
            staged.publish()
        if self._manifest_present:
            log.info("Replacing the export in %s: its manifest is removed first", self._folder.uri)
            remove(self._manifest)

    def remove_files_not_in(self, names: Sequence[str]) -> None:
        twins = {name.lower(): name for name in names}
        for name in dict.fromkeys(self._old_names):
            twin = twins.get(name.lower())
            if twin is not None and same_file(self._folder.child(name), self._folder.child(twin)):
                continue  # overwritten by the new export (the same name, or its case twin on such a disk)
            log.info("Removing %s of an earlier export in %s", name, self._folder.uri)
            remove(self._folder.child(name))

    def done(self) -> None:
        """The new manifest is in place: the journal has served."""
        remove(self._journal)


def _listed_names(raw: bytes) -> list[str]:
    """The file names an earlier manifest lists (plain names of our own shape only; nothing from an odd one)."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        log.warning("The earlier %s is not a manifest of ours: only it is removed", MANIFEST_NAME)
        return []
    names = []
    for entry in entries:
        uri = entry.get("uri") if isinstance(entry, dict) else None
        name = uri.rpartition("/")[2] if isinstance(uri, str) else ""
        if safe_file_stem(name, 0) == name and name != MANIFEST_NAME:
            names.append(name)
    return names


def _sweep_leftovers(folder: Destination, names: set[str]) -> None:
    """Remove hidden parts of killed runs: this export's own, and any unmodified for :data:`STALE_PART_SECONDS`."""
    for name in children(folder):
        ours = hidden_part_for(name, names)
        if ours is None:
            continue
        part = folder.child(name)
        age = modified_seconds_ago(part)
        if ours or (age is not None and age > STALE_PART_SECONDS):
            log.info("Removing %s in %s, left by an earlier run that was killed", name, folder.uri)
            remove(part)
    sweep_spools(STALE_PART_SECONDS)


def _download_batch(
    fetch_file: FileFetcher,
    folder: Destination,
    batch: dict[str, Any],
    file_format: str,
    track_id: str | None,
    before_publish: Callable[[], None],
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
        before_publish()
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


def _unique_names(stem: str, count: int, segmented: bool, extension: str, taken: set[str]) -> list[str]:
    """The file names of one batch (rule 4 of the module docs); they join ``taken``."""
    candidate, number = stem, 1
    while True:
        names = [f"{candidate}.part{n}{extension}" for n in range(1, count + 1)]
        if not segmented:
            names = [candidate + extension]
        keys = {candidate.lower(), *(name.lower() for name in names)}
        if not keys & taken:
            taken.update(keys)
            return names
        number += 1
        candidate = f"{stem}-{number}"


#: A manifest is kilobytes; one over this is not ours, and no more of it is read.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def manifest_json(raw: bytes, uri: str) -> dict[str, Any]:
    """
    A manifest's bytes (read up to :data:`MAX_MANIFEST_BYTES` + 1) as its JSON object.

    :raises AquaIntegrityError: too large, not JSON, or not an object: not a manifest of ours.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        raise AquaIntegrityError(f"{uri} is over {MAX_MANIFEST_BYTES} bytes: not a manifest of ours")
    try:
        data = json.loads(raw)
    except ValueError:
        raise AquaIntegrityError(f"{uri} is not JSON: not a manifest of ours") from None
    if not isinstance(data, dict):
        raise AquaIntegrityError(f"{uri} is not a JSON object: not a manifest of ours")
    return data
