"""Looking at an HTML report as a person would: headless Chromium (Debian's package, fetched
by ``devcluster chromium``) loads it, and the checks are on what the browser decoded and drew."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import image as mpimg

from devcluster import chromium

SCREEN = (1200, 2400)


def check_in_chromium(page: Path, screenshot: Path) -> list[str]:
    """Load ``page`` in headless Chromium; every figure's image must be decoded at its
    declared size (at least 200 px wide) and the screenshot must not be blank. Returns the
    figures' captions as the browser rendered them."""
    binary = chromium.ensure()
    # The report has no script; this probe page (a test's own) loads it in a frame and
    # writes what the browser made of each figure into its DOM, which --dump-dom prints.
    probe = screenshot.with_name(f"probe-{page.stem}.html")
    probe.write_text(
        "<!DOCTYPE html><html><body><pre id='out'></pre>"
        f"<iframe id='f' src='{page.resolve().as_uri()}' width='1200' height='800'></iframe>"
        "<script>document.getElementById('f').onload = function () {"
        "  var d = this.contentDocument; var lines = [];"
        "  d.querySelectorAll('figure').forEach(function (f) {"
        "    var i = f.querySelector('img');"
        "    lines.push([i.complete, i.naturalWidth, i.naturalHeight, i.width, i.height,"
        "      f.querySelector('figcaption').textContent].join('\\t'));"
        "  });"
        "  document.getElementById('out').textContent = lines.join('\\n') || 'none';"
        "};</script></body></html>"
    )
    dom = chromium.dump_dom(probe, binary, allow_file_access=True)
    assert '<pre id="out">' in dom, dom[:2000]
    seen = dom.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]
    rows = [line.split("\t") for line in seen.splitlines()]
    assert rows and rows != [["none"]], f"no figures in {page}: {dom[:2000]}"
    for complete, natural_w, natural_h, shown_w, shown_h, title in rows:
        assert complete == "true", title
        assert (natural_w, natural_h) == (shown_w, shown_h), (title, natural_w, shown_w)
        assert int(natural_w) >= 200 and int(natural_h) >= 100, title
    chromium.screenshot(page, screenshot, SCREEN, binary)
    pixels = mpimg.imread(screenshot)
    assert pixels.shape[:2] == (SCREEN[1], SCREEN[0]), pixels.shape
    # Not a blank page: a good share of the pixels is not background white.
    assert float(np.mean(pixels[..., :3].min(axis=2) < 0.9)) > 0.05, page
    return [row[5] for row in rows]
