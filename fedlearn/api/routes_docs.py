"""``/docs``: the API reference, Swagger UI over this server's ``/openapi.json``.

Swagger UI is vendored (``static/vendor``, Apache-2.0, see its README) so the page renders
with no network beyond this server. Like the dashboard, the page and its files are static and
outside the OpenAPI document; its calls ("Try it out") carry the token typed into Authorize.
"""

from __future__ import annotations

from flask import Blueprint, Response

from fedlearn.api.errors import NotFound
from fedlearn.api.routes_dashboard import send_static

PAGE = "docs.html"
FILES = {
    "docs.js",
    "vendor/swagger-ui-bundle.js",
    "vendor/swagger-ui.css",
}

page = Blueprint("web_docs", __name__)


@page.get("/docs")
def docs_page() -> Response:
    response = send_static(PAGE)
    # Swagger UI sets styles inline and draws its icons from data: URLs.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'"
    )
    return response


@page.get("/docs/<path:filename>")
def docs_file(filename: str) -> Response:
    if filename not in FILES:
        raise NotFound(f"no docs file {filename!r}")
    return send_static(filename)
