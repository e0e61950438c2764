"""The browser client and its demo page, served from the API's own origin.

Same origin means no CORS and no token sent to another host. These are static files, not API
operations, so they stay out of the OpenAPI document. The files are found in the source tree
(a clone or an editable install) or where ``pip install .`` put them
(``<prefix>/share/fedlearn/client_js``, see ``[tool.setuptools.data-files]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from flask import Blueprint, Response, redirect, send_from_directory

from fedlearn.api.errors import NotFound

bp = Blueprint("web", __name__)


def client_js_root() -> Path | None:
    """The folder holding ``src/`` and ``demo/`` of the browser client, if installed."""
    candidates = (
        Path(__file__).resolve().parents[2] / "client_js",
        Path(sys.prefix) / "share" / "fedlearn" / "client_js",
    )
    for folder in candidates:
        if (folder / "src" / "fedlearn.js").is_file():
            return folder
    return None


def _send(subfolder: str, filename: str) -> Response:
    root = client_js_root()
    if root is None:
        raise NotFound("the browser client's files are not installed with this server")
    response = send_from_directory(root / subfolder, filename, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/demo")
def demo_redirect() -> Response:
    return redirect("/demo/", code=308)  # type: ignore[return-value]


@bp.get("/demo/")
def demo_page() -> Response:
    return _send("demo", "index.html")


@bp.get("/demo/<path:filename>")
def demo_file(filename: str) -> Response:
    return _send("demo", filename)


@bp.get("/src/<path:filename>")
def client_module(filename: str) -> Response:
    if not filename.endswith(".js"):
        raise NotFound(f"no client module {filename!r}")
    return _send("src", filename)
