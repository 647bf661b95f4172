"""
Every page of the built docs, opened in headless Chromium at desktop widths, measured (no
screenshots): no code block whose lines are at most 100 characters scrolls sideways, and no
sidebar entry has a word broken across lines or cut off by the sidebar's edge.

The docs are built as ``.ci/docs`` builds them; ``DOCS_HTML=<folder>`` checks a build already made
instead (that is how this test was seen to fail on the old Alabaster build).
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docs_build import build_docs

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

#: Lines longer than this may scroll: a code block is only held to fit when all its lines are this short.
MAX_UNSCROLLED_LINE = 100
#: Window widths: the browser tests' window (1400 px), the narrowest with Furo's sidebar beside
#: the text (67em), and a wide screen (where Furo sets a larger font). The text column is sized in
#: em: it holds as many characters at all three.
WIDTHS = (1072, 1400, 1920)
#: The sidebars of the themes this project used or considered: Alabaster, Furo, PyData.
SIDEBARS = ".sphinxsidebar, .sidebar-drawer, .toc-drawer, .bd-sidebar-primary, .bd-sidebar-secondary"

MEASURE = """
const maxLine = arguments[0], sidebars = arguments[1];
const found = {code: [], broken: [], cut: [], pres: 0, entries: 0, sidebars: 0};
for (const pre of document.querySelectorAll("pre")) {
  if (!pre.getClientRects().length) continue;
  found.pres++;
  const longest = Math.max(...pre.textContent.replace(/\\n$/, "").split("\\n").map(line => line.length));
  if (longest > maxLine) continue;
  // The block scrolls if the pre or the box around it (div.highlight) is wider inside than outside.
  for (const box of [pre, pre.parentElement]) {
    if (box.scrollWidth > box.clientWidth + 1) {
      found.code.push({longest, scrollWidth: box.scrollWidth, clientWidth: box.clientWidth,
                       start: pre.textContent.slice(0, 50)});
      break;
    }
  }
}
for (const bar of document.querySelectorAll(sidebars)) {
  if (!bar.getClientRects().length) continue;
  found.sidebars++;
  const edge = bar.getBoundingClientRect();
  for (const link of bar.querySelectorAll("a")) {
    if (!link.getClientRects().length) continue;  // a folded part of the tree
    found.entries++;
    const walker = document.createTreeWalker(link, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      // A word: letters, digits and underscores. A break at a space, hyphen or dot is fine.
      for (const word of node.textContent.matchAll(/\\w{2,}/g)) {
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const rects = Array.from(range.getClientRects()).filter(rect => rect.width > 0);
        const lines = new Set(rects.map(rect => Math.round(rect.bottom)));
        const entry = link.textContent.trim();
        if (lines.size > 1) found.broken.push(`${word[0]} (in "${entry}")`);
        if (rects.some(rect => rect.right > edge.right + 1 || rect.left < edge.left - 1)) {
          found.cut.push(`${word[0]} (in "${entry}")`);
        }
      }
    }
  }
}
return found;
"""


@pytest.fixture(scope="module")
def docs_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("DOCS_HTML")
    if given:
        return Path(given)
    return build_docs(tmp_path_factory.mktemp("docs-html"))


@pytest.fixture(scope="module")
def docs_server(docs_html: Path) -> Iterator[str]:
    """The built pages over HTTP on loopback, as a browser reads a published site."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(docs_html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def built_pages(html: Path) -> list[str]:
    """Every HTML page of the build (the guides, the API reference, the source pages, the indexes)."""
    pages = [path.relative_to(html).as_posix() for path in html.rglob("*.html")]
    return sorted(page for page in pages if not page.startswith(("_static/", "_sources/")))


@pytest.mark.parametrize("width", WIDTHS)
def test_no_short_code_line_scrolls_and_no_sidebar_word_breaks_on_any_page(
    browser, docs_html: Path, docs_server: str, width: int
) -> None:
    browser.set_window_size(width, 1000)
    pages = built_pages(docs_html)
    # Every source page was built and is opened (docs/foo.md -> _sources/foo.md.txt -> foo.html).
    sources = [path.relative_to(docs_html / "_sources").as_posix() for path in docs_html.glob("_sources/**/*.txt")]
    assert len(sources) > 10 and {source.removesuffix(".md.txt") + ".html" for source in sources} <= set(pages)

    scrolled, broken, cut = [], [], []
    code_blocks = entries = 0
    for page in pages:
        browser.get(f"{docs_server}/{page}")
        found = browser.execute_script(MEASURE, MAX_UNSCROLLED_LINE, SIDEBARS)
        assert found["sidebars"], f"{page}: no sidebar found ({SIDEBARS})"
        code_blocks += found["pres"]
        entries += found["entries"]
        scrolled += [f"{page}: {block}" for block in found["code"]]
        broken += [f"{page}: {word}" for word in found["broken"]]
        cut += [f"{page}: {word}" for word in found["cut"]]

    # Guards the measuring: it saw every code block of the build, and the sidebars' entries.
    assert code_blocks == sum((docs_html / page).read_text().count("<pre") for page in pages) > 20
    assert entries > 10 * len(pages), entries
    report = {
        f"code blocks of lines <= {MAX_UNSCROLLED_LINE} characters that scroll at {width} px": scrolled,
        f"sidebar words broken across lines at {width} px": broken,
        f"sidebar words cut off by the sidebar's edge at {width} px": cut,
    }
    assert not any(report.values()), "\n".join(
        f"{what}: {len(items)}\n  " + "\n  ".join(items[:10]) for what, items in report.items() if items
    )
