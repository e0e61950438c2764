"""The operations dashboard: a static page (``/dashboard``) and its admin data endpoint.

``GET /v1/dashboard/data`` gathers, in O(shards + trainers + rounds) and never O(users), what
an operator watches: the trainers' published snapshots merged (``trainer.publisher``), every
shard's stream length and lag, the tail of the base history with each round and monthly
retrain, and the latest rounds. The page polls it and keeps its own rolling time series, so
the server keeps no history and the page updates without reloading.

The page is static HTML (no data in it, no token in it): it takes the admin token from the
query string or a form and sends it as a Bearer token to the data endpoint. Its files are
served by ``page`` (blueprint ``web_dashboard``), outside the OpenAPI document like the
browser client's files (``web.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from flask import Blueprint, Response, redirect, request, send_from_directory
from pydantic import BaseModel, ConfigDict, Field

from fedlearn.api.context import api_context
from fedlearn.api.errors import NotFound
from fedlearn.api.routing import ApiBlueprint, Reply
from fedlearn.store.bases import BaseInfo
from fedlearn.store.telemetry import RoundRow, Telemetry
from fedlearn.trainer.publisher import summarize

STATIC = Path(__file__).resolve().parent / "static"
PAGE = "dashboard.html"

bp = ApiBlueprint("dashboard", __name__, tag="ops")
page = Blueprint("web_dashboard", __name__)


# --- the answer, as documented in the OpenAPI document ----------------------------------------


class DashboardQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: Annotated[int, Field(ge=1, le=200)] = 20
    versions: Annotated[int, Field(ge=1, le=1000)] = 100


class TrainerRow(BaseModel):
    owner: str
    name: str
    shards: list[int]
    applied: float = Field(description="events applied since the trainer started")
    rate: float = Field(description="events applied per second, over its latest window")
    cached_users: float = Field(description="users' clones held in memory")
    served_base: float = Field(description="of those, users the gate serves the base")
    age_s: float = Field(description="seconds since the trainer's snapshot")


class ModelFigures(BaseModel):
    auc: float | None = Field(description="progressive AUC over the trainers' latest events")
    log_loss: float | None = Field(description="progressive log loss since the trainers started")
    window_log_loss: float | None = Field(description="progressive log loss, latest window")
    events: float = Field(description="events scored since the trainers started")
    window_events: float = Field(description="events scored in the latest window")


class Totals(BaseModel):
    applied: float
    rate: float = Field(description="events applied per second, all trainers")
    cached_users: float
    served_base: float = Field(description="users served the base by their gate (in memory)")


class Freshness(BaseModel):
    p50: float | None = Field(description="seconds from acceptance to commit, median")
    p99: float | None
    events: float = Field(description="events behind the quantiles (latest window)")


class ShardRow(BaseModel):
    shard: int
    length: int
    pending: int
    lag_events: int
    lag_seconds: float
    users: int
    holder: str | None


class VersionRow(BaseModel):
    version: str
    created_at: float
    kind: Literal["round", "monthly", "trained"]
    round: str | None = None
    users: int | None = None
    events: int | None = None
    current: bool


class Bases(BaseModel):
    current: str | None
    versions: list[VersionRow] = Field(description="the latest published versions, oldest first")


class DashboardData(BaseModel):
    at: float
    n_shards: int
    totals: Totals
    trainers: list[TrainerRow]
    progressive: dict[str, dict[str, ModelFigures]] = Field(
        description="events ('all' | 'first': users' first events) -> model ('clone' | 'base')"
    )
    freshness: Freshness
    shards: list[ShardRow]
    bases: Bases
    # The store's dataclass itself: pydantic validates it and puts its schema in the OpenAPI.
    rounds: list[RoundRow] = Field(description="the latest rounds, newest first")


def version_row(info: BaseInfo, current: str | None) -> dict[str, Any]:
    """One published version on the timeline: a round's, a monthly retrain's, or trained."""
    meta = info.meta or {}
    # A round publishes its summary as the version's meta ({"round": id, "users", ...});
    # the base file's own header nests it ({"round": {...}}): accept both.
    summary = meta["round"] if isinstance(meta.get("round"), dict) else meta
    if isinstance(summary.get("round"), str):
        kind, round_id = "round", summary["round"]
        users, events = summary.get("users"), summary.get("events")
    elif meta.get("kind") == "monthly":
        kind, round_id, users, events = "monthly", None, None, meta.get("n_events")
    else:
        kind, round_id, users, events = "trained", None, None, None
    return {
        "version": info.version,
        "created_at": info.created_at,
        "kind": kind,
        "round": round_id if isinstance(round_id, str) else None,
        "users": users if isinstance(users, int) else None,
        "events": events if isinstance(events, int) else None,
        "current": info.version == current,
    }


def dashboard_data(telemetry: Telemetry, *, rounds: int = 20, versions: int = 100) -> dict:
    """Everything the dashboard shows, read from the store now."""
    now = time.time()
    merged = summarize(telemetry.snapshots(), now=now)
    current, tail = telemetry.base_tail(versions)
    return {
        "at": now,
        "n_shards": telemetry.n_shards,
        "totals": {
            "applied": merged["applied"],
            "rate": merged["rate"],
            "cached_users": merged["cached_users"],
            "served_base": merged["served_base"],
        },
        "trainers": merged["trainers"],
        "progressive": merged["progressive"],
        "freshness": merged["freshness"],
        "shards": [
            {
                "shard": s.shard,
                "length": s.length,
                "pending": s.pending,
                "lag_events": s.lag_events,
                "lag_seconds": s.lag_seconds,
                "users": s.users,
                "holder": s.holder,
            }
            for s in telemetry.shard_stats()
        ],
        "bases": {"current": current, "versions": [version_row(i, current) for i in tail]},
        "rounds": [r.to_json() for r in telemetry.recent_rounds(rounds)],
    }


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
    """Trainers' merged snapshots, per-shard stream state, the base timeline and the latest
    rounds. Aggregate counts only: the answer's size does not grow with the users."""
    store = api_context().store
    data = dashboard_data(Telemetry.of(store), rounds=query.rounds, versions=query.versions)
    response = Response(orjson.dumps(data), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


# --- the page and its files (not API operations: outside the OpenAPI document) ---------------


def _static(filename: str) -> Response:
    response = send_from_directory(STATIC, filename, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@page.get("/dashboard")
def dashboard_page() -> Response:
    response = _static(PAGE)
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
    return _static(filename)
