"""Sphinx configuration of the provider's docs (MyST markdown; built by .ci/docs with -W)."""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path

# The API reference documents the code of this checkout, whatever copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# autodoc imports the package, and so Airflow: without an AIRFLOW_HOME of its own, a build would
# write ~/airflow/airflow.cfg, and Airflow's INFO lines would fill the build's output.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="zuora-aqua-docs-airflow-"))
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from airflow_provider_zuora_aqua import __version__  # noqa: E402

project = "airflow-provider-zuora-aqua"
author = "airflow-provider-zuora-aqua contributors"
copyright = "2026, " + author
release = __version__
version = release

extensions = [
    "myst_parser",
    # The API reference (docs/api/): one page per public module, generated from the docstrings,
    # which are Sphinx-style (``:param x:``). Not napoleon: it would read the ``#: Why: ...``
    # comments of the constants as Google-style ``type: description``.
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Section links such as [Testing a connection](connection.md#testing-a-connection).
myst_heading_anchors = 3

# autodoc: every public member the module defines (or lists in __all__), in source order, with its
# bases; the types go beside the documented parameters instead of into a signature as long as a line.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"
# A method without a docstring of its own (execute) is left out rather than shown with BaseOperator's.
autodoc_inherit_docstrings = False
# The page names its module once; each object by its own name.
add_module_names = False
# Parameters one per line once a signature would pass this many characters.
python_maximum_signature_line_length = 88
# The in-page table of contents lists the objects by their own names (execute, not
# AquaSubmitJobOperator.execute): short entries, no long dotted words to wrap.
toc_object_entries_show_parents = "hide"

# Furo rather than the PyData theme: its sidebar wraps long entries and its layout is sized in em,
# so the text column holds the same number of characters at every desktop width; custom.css widens
# that column (within Furo's own 52em budget) so that a code line of 100 characters fits unscrolled.
# PyData's column shrinks with the window (about 700 px at 1400 px with both sidebars), which would
# scroll most of the example DAGs' lines. tests/browser/test_docs_layout.py checks both promises.
html_theme = "furo"
html_title = f"{project} {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]

_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType)


def _document_every_public_definition(app, what, name, obj, skip, options):  # type: ignore[no-untyped-def]
    """Keep a module's public classes and functions on its page even when they have no docstring yet."""
    if what == "module" and not name.startswith("_") and isinstance(obj, (type, *_FUNCTION_TYPES)):
        return False
    return None


def _public_bases(app, name, obj, options, bases):  # type: ignore[no-untyped-def]
    """Show a private base class (``_DeliveringOperator``) as the public bases it stands for."""
    expanded = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if base.__name__.startswith("_"):
            pending[:0] = [b for b in base.__bases__ if b is not object]
        elif base not in expanded:
            expanded.append(base)
    bases[:] = expanded


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-skip-member", _document_every_public_definition)
    app.connect("autodoc-process-bases", _public_bases)
