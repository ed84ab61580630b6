"""The page itself: its HTML (rendered once with the plotting library's versioned path), the
Content-Security-Policy it is served with, and where the plotting library comes from.

plotly.js is taken from the installed ``plotly`` Python package, never from the internet.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import distribution
from pathlib import Path
from string import Template

STATIC_DIR = Path(__file__).parent / "static"

#: No inline script or style, nothing from another origin, no framing; the page's own files only.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

#: Headers of the page and its files.
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

#: plotly.js adds the stylesheet of its map library as an inline <style> (which the policy refuses, and
#: the browser reports as an error) unless an element with this marker id exists; maps are not drawn here.
_INLINE_CSS_MARKER = re.compile(
    r'document\.getElementById\("([0-9a-f]{64})"\)\)\{var \w+=document\.createElement'
    r'\("style"\)'
)


@dataclass(frozen=True)
class Plotly:
    """The plotly.js bundle shipped inside the ``plotly`` package."""

    path: Path
    version: str

    @classmethod
    def installed(cls) -> Plotly:
        """Found through the package's metadata, without importing plotly (the gateway never runs it)."""
        dist = distribution("plotly")
        return cls(Path(str(dist.locate_file("plotly/package_data/plotly.min.js"))), dist.version)

    @property
    def url(self) -> str:
        """Where the page loads it: versioned, so that browsers may cache it for good."""
        return f"/web/vendor/plotly-{self.version}.min.js"

    @cached_property
    def inline_css_markers(self) -> list[str]:
        return _INLINE_CSS_MARKER.findall(self.path.read_text(encoding="utf-8", errors="replace"))


def render_index(plotly: Plotly) -> str:
    """index.html with the plotly.js path and its inline-stylesheet markers filled in."""
    markers = "\n".join(
        f'  <meta name="fpf-vendor-css" id="{html.escape(marker)}">' for marker in plotly.inline_css_markers
    )
    template = Template((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    return template.substitute(plotly_js=html.escape(plotly.url), vendor_css_markers=markers)
