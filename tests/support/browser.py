"""Where the browser tests leave their screenshots, page sources and logs."""

from __future__ import annotations

import os
from pathlib import Path

ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS") or Path(__file__).parent.parent / "browser" / "artifacts")
