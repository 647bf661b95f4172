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

import re
from collections.abc import Iterable
from typing import Any

from airflow_provider_zuora_aqua.exceptions import AquaConfigurationError, AquaIntegrityError
from airflow_provider_zuora_aqua.incremental.series import Series, check_same_series
from airflow_provider_zuora_aqua.incremental.windows import Window
from airflow_provider_zuora_aqua.results.delivery import MANIFEST_NAME, MAX_MANIFEST_BYTES, manifest_json
from airflow_provider_zuora_aqua.results.destination import Destination

_QUERY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def validate_query_name(name: object) -> str:
    """A query name is its folder's name: letters, digits, ``_ . -``, at most 100 characters."""
    if not isinstance(name, str) or not _QUERY_NAME.fullmatch(name):
        raise AquaConfigurationError(
            f"queries: the name {name!r} names its folder under the destination: use 1-100 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit (e.g. 'Account')"
        )
    return name


def validate_query_names(names: Iterable[object]) -> list[str]:
    """
    Every query's name (see :func:`validate_query_name`), in order; no two equal ignoring case.

    Two such names would share one folder on a case-insensitive store (macOS and Windows file
    systems, some object-storage mounts) and mix their windows.
    """
    checked = [validate_query_name(name) for name in names]
    seen: dict[str, str] = {}
    for name in checked:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise AquaConfigurationError(
                f"queries: the names {other!r} and {name!r} differ only in case, and would share one folder on a "
                f"case-insensitive store: rename one (e.g. {name!r} to '{name}_2')"
            )
    return checked


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


def published_windows(destination: Destination, query: str, cursor: str, series: Series | None = None) -> list[Window]:
    """
    The windows of ``query`` whose manifest is in place, oldest first.

    With ``series``, each manifest that records its series must record this one
    (:func:`~airflow_provider_zuora_aqua.incremental.series.check_same_series`).

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
        held = Series.from_manifest(manifest)
        if series is not None and held is not None:
            check_same_series(held, series, query_name=query, folder_uri=destination.child(query).uri)
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
    return [query_folder.child(name) for name in sorted(names) if _is_window_slug(name)]


def _is_window_slug(name: str) -> bool:
    """Whether a folder is named as :attr:`Window.slug` names one (any other folder is not ours)."""
    try:
        Window.from_slug(name)
    except ValueError:
        return False
    return True


def _read_manifest(target: Destination) -> dict[str, Any] | None:
    path: Any = target.local if target.local is not None else target.remote
    if not path.exists():
        return None
    with path.open("rb") as handle:
        return manifest_json(handle.read(MAX_MANIFEST_BYTES + 1), target.uri)
