"""The operations dashboard: a static page (``/dashboard``) and its admin data endpoint.

``GET /v1/dashboard/data`` answers what an operator watches, gathered by
``telemetry.dashboard`` in O(shards + trainers + rounds), never O(users). The page polls it and
keeps its own rolling time series, so the server keeps no history and the page updates without
reloading.

The page is static HTML (no data in it, no token in it): it takes the admin token from the
query string or a form and sends it as a Bearer token to the data endpoint. Its files are
served by ``page`` (blueprint ``web_dashboard``), outside the OpenAPI document like the
browser client's files (``web.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from flask import Blueprint, Response, redirect, request, send_from_directory
from pydantic import BaseModel, ConfigDict, Field

from fedlearn.api.context import api_context
from fedlearn.api.errors import NotFound
from fedlearn.api.routing import ApiBlueprint, Reply, json_response
from fedlearn.telemetry.dashboard import DashboardData, dashboard_data

STATIC = Path(__file__).resolve().parent / "static"
PAGE = "dashboard.html"

bp = ApiBlueprint("dashboard", __name__, tag="ops")
page = Blueprint("web_dashboard", __name__)


# --- the data endpoint (its answer's models: telemetry.dashboard) ---------------------------


class DashboardQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: Annotated[int, Field(ge=1, le=200)] = 20
    versions: Annotated[int, Field(ge=1, le=1000)] = 100


@bp.operation(
    "GET",
    "/v1/dashboard/data",
    summary="What the operations dashboard shows, now",
    auth="admin",
    query=DashboardQuery,
    replies={200: Reply("aggregate figures: O(shards + trainers + rounds)", DashboardData)},
    errors=(503,),
)
def get_dashboard_data(query: DashboardQuery) -> Response:
    """Trainers' merged snapshots, per-shard stream state, the base timeline, the latest
    rounds, the served policy vs greedy (off-policy) and rank's exploration rate. Aggregate
    counts only: the answer's size does not grow with the users."""
    ctx = api_context()
    store = ctx.store
    data = dashboard_data(
        store.telemetry, rounds=query.rounds, versions=query.versions, drift=store.drift,
        ope=store.ope, ranked=ctx.metrics.ranking_counts(),
    )  # fmt: skip
    return json_response(data)


# --- the page and its files (not API operations: outside the OpenAPI document) ---------------


def send_static(filename: str) -> Response:
    response = send_from_directory(STATIC, filename, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@page.get("/dashboard")
def dashboard_page() -> Response:
    response = send_static(PAGE)
    # The token may arrive in the query string: never send it on in a Referer header.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'"
    )
    return response


@page.get("/dashboard/")
def dashboard_slash() -> Response:
    target = "/dashboard" + (f"?{request.query_string.decode()}" if request.query_string else "")
    return redirect(target, code=308)  # type: ignore[return-value]


@page.get("/dashboard/<path:filename>")
def dashboard_file(filename: str) -> Response:
    if filename == PAGE or not filename.endswith((".js", ".css")):
        raise NotFound(f"no dashboard file {filename!r}")
    return send_static(filename)
