"""The web page served by the gateway at ``/``: static files of our own, plotly.js from its Python
package, and the read-only helpers the page calls (see docs/web.md)."""
