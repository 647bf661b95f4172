"""
Check a documented command without running it: ``python parse_only.py <script.py | -m module> [args]``.

The script or module starts as ``python`` would start it; when it parses its command line, the
arguments are parsed by its own ``argparse`` parser (an unknown option or a bad value exits 2, as
it would for a user) and then the process exits 0 instead of running the command. A script that
never parses its arguments exits 3.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

_parse_known_args = argparse.ArgumentParser.parse_known_args


def _parse_then_exit(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
    parsed, extra = _parse_known_args(self, args, namespace)
    if extra:
        self.error(f"unrecognized arguments: {' '.join(extra)}")
    print(f"parsed: {parsed}", flush=True)
    raise SystemExit(0)


def main() -> None:
    argparse.ArgumentParser.parse_known_args = _parse_then_exit  # type: ignore[method-assign]
    if sys.argv[1] == "-m":
        sys.argv = [sys.argv[2], *sys.argv[3:]]
        sys.path.insert(0, os.getcwd())  # as ``python -m`` does
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    sys.exit(3)


if __name__ == "__main__":
    main()
