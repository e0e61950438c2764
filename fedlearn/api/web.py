"""The browser client and its demo page, served from the API's own origin.

Same origin needs no CORS (pages of other origins need FEDLEARN_CORS_ORIGINS). These are static
files, not API operations, so they stay out of the OpenAPI document. The files are found in the
source tree or where ``pip install .`` put them (:func:`fedlearn.resources.shipped_folder`).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, send_from_directory

from fedlearn.api.errors import NotFound
from fedlearn.resources import shipped_folder

bp = Blueprint("web", __name__)


def client_js_root() -> Path | None:
    """The folder holding ``src/`` and ``demo/`` of the browser client, if installed."""
    return shipped_folder("client_js", "src/fedlearn.js")


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
