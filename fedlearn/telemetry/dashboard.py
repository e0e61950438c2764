"""What the operations dashboard shows: the rows an operator reads and the answer of
``GET /v1/dashboard/data``, gathered in O(shards + trainers + rounds), never O(users).

The trainers' snapshots merged (``telemetry.summary``), every shard's stream length and lag,
the tail of the base history with each round and monthly retrain, and the latest rounds. The
pydantic models document the answer in the OpenAPI document; ``api.routes_dashboard`` only
serves it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from fedlearn.store.bases import BaseInfo
from fedlearn.store.drift import DriftLog
from fedlearn.store.ope import OpeEstimates
from fedlearn.store.telemetry import ShardStats, Telemetry
from fedlearn.telemetry.summary import summarize


@dataclass(frozen=True, slots=True)
class RoundRow:
    """The figures of one aggregation round that operators watch."""

    id: str
    status: str
    trigger: str
    created_at: float
    finished_at: float | None
    duration_s: float | None
    users: int | None
    events: int | None
    clipped_fraction: float | None
    version: str | None
    parent: str | None
    strategy: str | None
    error: str | None
    shadow: str | None = None  # the shadow check's figures, candidate vs current base

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def round_row(record: Mapping[str, Any]) -> RoundRow:
    """The watched figures of a round record (``store.rounds``), whatever state it is in."""
    result = record.get("result") or {}
    started = _number(record.get("started_at")) or _number(record.get("created_at"))
    ended = _number(record.get("published_at")) or _number(record.get("finished_at"))
    users = result.get("users")
    clipped = result.get("clipped_users")
    fraction = None
    if isinstance(users, int) and users > 0 and isinstance(clipped, int):
        fraction = clipped / users
    strategy = result.get("strategy")
    return RoundRow(
        id=str(record["id"]),
        status=str(record.get("status", "")),
        trigger=str(record.get("trigger", "")),
        created_at=_number(record.get("created_at")) or 0.0,
        finished_at=_number(record.get("finished_at")) or ended,
        duration_s=(ended - started) if started is not None and ended is not None else None,
        users=users if isinstance(users, int) else None,
        events=result.get("events") if isinstance(result.get("events"), int) else None,
        clipped_fraction=fraction,
        version=result.get("version") or record.get("new_version"),
        parent=result.get("parent") or record.get("base"),
        strategy=strategy.get("name") if isinstance(strategy, dict) else None,
        error=record.get("error"),
        shadow=_shadow_note(result.get("shadow")),
    )


def _shadow_note(shadow: Any) -> str | None:
    """``shadow: log loss 0.512 (current 0.530) on 5000 events``, or why it was not scored."""
    if not isinstance(shadow, Mapping):
        return None
    if not shadow.get("scored"):
        return f"shadow: {shadow.get('reason', 'not scored')}"
    mine, theirs = shadow.get("candidate") or {}, shadow.get("current") or {}
    return (
        f"shadow: log loss {mine.get('log_loss')} (current {theirs.get('log_loss')}) on "
        f"{shadow.get('events')} events"
    )


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


class DriftRow(BaseModel):
    id: str
    signal: str
    shard: int | None = Field(description="None: over all of the trainer's shards")
    before: float = Field(description="the signal's mean before the change")
    after: float = Field(description="its mean since")
    magnitude: float
    events: int = Field(description="events the detector had seen when it fired")
    trainer: str
    at: float
    actions: dict[str, Any] = Field(description="what was done about it (early_round, retrain)")


class OpeFigure(BaseModel):
    value: float | None = Field(description="the estimated top-slot click rate")
    low: float | None = Field(description="its 95 % interval, clustered by user")
    high: float | None
    n: int = Field(description="top-slot decisions behind it")
    users: int
    ess: float | None = Field(description="effective sample size of the weights")


class OffPolicy(BaseModel):
    computed_at: float = Field(description="when the beat task estimated it (unix time)")
    last: int = Field(description="the newest top-slot events it read (at most)")
    served: OpeFigure | None = Field(description="the served policy's own click rate")
    greedy: OpeFigure | None = Field(
        description="greedy's SNIPS estimate (None: the logged policies do not tell)"
    )
    error: str | None = Field(description="why there is no estimate yet")


class ExplorationRow(BaseModel):
    policy: str = Field(description="the exploration policy kind rank followed")
    shown: float = Field(description="items rank put in a slot (this API's processes)")
    explored: float = Field(description="of those, picked while a better-scored one was left")
    rate: float | None = Field(description="explored / shown")


class DashboardData(BaseModel):
    at: float
    n_shards: int
    totals: Totals
    trainers: list[TrainerRow]
    progressive: dict[str, dict[str, ModelFigures]] = Field(
        description="events ('all' | 'first': users' first events) -> model ('clone' | 'base')"
    )
    freshness: Freshness
    shards: list[ShardStats]
    bases: Bases
    # Dataclasses themselves: pydantic validates them and puts their schema in the OpenAPI.
    rounds: list[RoundRow] = Field(description="the latest rounds, newest first")
    drift: list[DriftRow] = Field(default=[], description="the latest drift events, newest first")
    off_policy: OffPolicy | None = Field(
        default=None, description="served vs greedy, estimated on the event log (None: not yet)"
    )
    exploration: list[ExplorationRow] = Field(
        default=[], description="rank's exploration rate by policy, since the API started"
    )


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


def dashboard_data(
    telemetry: Telemetry,
    *,
    rounds: int = 20,
    versions: int = 100,
    drift: DriftLog | None = None,
    drift_events: int = 50,
    ope: OpeEstimates | None = None,
    ranked: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Everything the dashboard shows, read from the store now; ``ranked``: items shown and
    explored by policy kind (the API's counters, ``Metrics.ranking_counts``)."""
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
        "shards": [asdict(s) for s in telemetry.shard_stats()],
        "bases": {"current": current, "versions": [version_row(i, current) for i in tail]},
        "rounds": [round_row(r).to_json() for r in telemetry.recent_rounds(rounds)],
        "drift": [e.to_json() for e in drift.latest(limit=drift_events)] if drift else [],
        "off_policy": ope.latest() if ope else None,
        "exploration": [exploration_row(policy, c) for policy, c in sorted((ranked or {}).items())],
    }


def exploration_row(policy: str, counts: Mapping[str, float]) -> dict[str, Any]:
    """How often rank explored under ``policy``: the share of shown items it explored."""
    shown, explored = counts.get("shown", 0.0), counts.get("explored", 0.0)
    rate = explored / shown if shown > 0 else None
    return {"policy": policy, "shown": shown, "explored": explored, "rate": rate}
