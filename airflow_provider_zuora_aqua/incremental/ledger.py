"""
What the destination says was exported: the watermark's only source of truth.

Layout: one folder per query, one per window, named so that they sort in time order::

    <destination>/<query>/<start>_<end>/<query>.csv          (or .csv.gz, .zip, .partN...)
    <destination>/<query>/<start>_<end>/_manifest.json       written last

A window folder without ``_manifest.json`` was cut short (a killed run): it does not count and
is written anew, never appended to. A manifest names its query and window, so a folder moved
or renamed by hand cannot pass for another window.
"""

from __future__ import annotations

import json
import re
from typing import Any

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError
from airflow_provider_zuora_aqua.incremental.windows import Window
from airflow_provider_zuora_aqua.results.delivery import MANIFEST_NAME
from airflow_provider_zuora_aqua.results.destination import Destination

_QUERY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_WINDOW_FOLDER = re.compile(r"\d{8}T\d{6}Z_\d{8}T\d{6}Z")
#: A manifest lists files; one larger than this is not ours.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def validate_query_name(name: object) -> str:
    """A query name is its folder's name: letters, digits, ``_ . -``, at most 100 characters."""
    if not isinstance(name, str) or not _QUERY_NAME.fullmatch(name):
        raise AquaConfigurationError(
            f"queries: the name {name!r} names its folder under the destination: use 1-100 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit (e.g. 'Account')"
        )
    return name


def window_folder(destination: Destination, query: str, window: Window) -> Destination:
    return destination.child(query).child(window.slug)


def clear_window(folder: Destination) -> None:
    """
    Empty a window folder before the window is exported into it: what a killed run left there
    (files of another job, hidden partial files) is replaced, never appended to. Only called for
    a window without a manifest, which no consumer reads.
    """
    path: Any = folder.local if folder.local is not None else folder.remote
    if not path.exists():
        return
    for child in list(path.iterdir()):
        if child.is_file():
            child.unlink()


def published_windows(destination: Destination, query: str, cursor: str) -> list[Window]:
    """
    The windows of ``query`` whose manifest is in place, oldest first.

    :raises AquaIntegrityError: a manifest that names another query, cursor or window than its
        folder says (the mark cannot be trusted), or that is not a manifest of ours.
    """
    windows = []
    for folder in _window_folders(destination.child(query)):
        manifest = _read_manifest(folder.child(MANIFEST_NAME))
        if manifest is None:
            continue
        where = folder.child(MANIFEST_NAME).uri
        window_json = manifest.get("window")
        try:
            window = Window.from_json(window_json)
        except ValueError as exc:
            raise AquaIntegrityError(f"{where} holds no valid window: {exc}") from None
        if manifest.get("query") != query or window.slug != folder.name:
            raise AquaIntegrityError(
                f"{where} describes query {manifest.get('query')!r} window {window.slug}, not what its folder says "
                f"({query!r}, {folder.name}): restore the folder or remove it to export that window again"
            )
        if isinstance(window_json, dict) and window_json.get("cursor") != cursor:
            raise AquaConfigurationError(
                f"{where} was exported on cursor {window_json.get('cursor')!r}, not {cursor!r}: windows on another "
                "cursor would miss or double records; export to a new destination to change the cursor"
            )
        windows.append(window)
    return sorted(windows)


def _window_folders(query_folder: Destination) -> list[Destination]:
    if query_folder.local is not None:
        if not query_folder.local.is_dir():
            return []
        names = [path.name for path in query_folder.local.iterdir() if path.is_dir()]
    else:
        remote: Any = query_folder.remote
        if not remote.exists():
            return []
        names = [path.name for path in remote.iterdir() if path.is_dir()]
    return [query_folder.child(name) for name in sorted(names) if _WINDOW_FOLDER.fullmatch(name)]


def _read_manifest(target: Destination) -> dict[str, Any] | None:
    path: Any = target.local if target.local is not None else target.remote
    if not path.exists():
        return None
    with path.open("rb") as handle:
        raw = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise AquaIntegrityError(f"{target.uri} is over {MAX_MANIFEST_BYTES} bytes: not a manifest of ours")
    try:
        data = json.loads(raw)
    except ValueError:
        raise AquaIntegrityError(f"{target.uri} is not JSON: not a manifest of ours") from None
    if not isinstance(data, dict):
        raise AquaIntegrityError(f"{target.uri} is not a JSON object: not a manifest of ours")
    return data
