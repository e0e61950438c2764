"""The trainers' telemetry: a periodic snapshot of each trainer's metrics, published to Redis.

The API cannot scrape the trainers (they may run anywhere, behind no address it knows), but
it shares their Redis. So every few seconds each trainer writes a small summary of its
Prometheus metrics (``fedlearn.telemetry.trainer``) under a key with a TTL
(``store.telemetry``): counts, the progressive log loss and AUC of the clones and of the base
in shadow, freshness histogram buckets, its shards, and how many of its users the serving
gate gives the base. A snapshot holds counts, never per-user lists, so reading all of them is
O(trainers). ``summarize`` merges the live snapshots into the dashboard's figures.

Each snapshot also carries a *window*: what changed since the trainer's previous snapshot
(events, log loss, freshness buckets). Windows of different trainers add up exactly, so the
dashboard shows current rates and quantiles, not averages since each process started.

The trainer calls :meth:`Publisher.maybe_publish` from its loop (one thread: no locks) and
:meth:`Publisher.withdraw` when it stops.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from fedlearn.store.telemetry import DEFAULT_TTL_S, Telemetry
from fedlearn.telemetry import trainer as metrics

if TYPE_CHECKING:
    from fedlearn.trainer.trainer import Trainer

SNAPSHOT_FORMAT = 1
GATE_USERS = Gauge(
    "fedlearn_gate_users",
    "Users whose clone this trainer holds in memory, by what the serving gate gives them",
    ["served"],
)
CACHED_USERS = Gauge("fedlearn_trainer_cached_users", "Users' clones held in memory")
PAIRS = (("all", "clone"), ("all", "base"), ("first", "clone"), ("first", "base"))


def _samples(metric: Any) -> list[Any]:
    return [s for family in metric.collect() for s in family.samples]


def _counter_by(metric: Any, *labels: str) -> dict[tuple[str, ...], float]:
    """A labelled counter's values by label tuple (``_total`` samples only)."""
    return {
        tuple(s.labels[name] for name in labels): s.value
        for s in _samples(metric)
        if s.name.endswith("_total")
    }


def _gauge_by(metric: Any, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels[name] for name in labels): s.value for s in _samples(metric)}


def _histogram(metric: Any) -> tuple[list[float], list[float], float, float]:
    """Upper bounds (``+Inf`` last), cumulative bucket counts, count and sum."""
    bounds, counts, total, value_sum = [], [], 0.0, 0.0
    for s in _samples(metric):
        if s.name.endswith("_bucket"):
            bounds.append(float(s.labels["le"]))
            counts.append(s.value)
        elif s.name.endswith("_count"):
            total = s.value
        elif s.name.endswith("_sum"):
            value_sum = s.value
    return bounds, counts, total, value_sum


def count_gates(trainer: Trainer) -> tuple[int, int]:
    """(users served their clone, users served the base) among the clones in memory.

    ``Gate.serve`` gives the base exactly when ``p_clone < 0.5``, that is when the base's
    discounted loss is below the clone's (``eta > 0``); comparing the losses avoids an
    ``exp`` per user, which matters with 100,000 users in memory.
    """
    clone = base = 0
    for shard in list(trainer.shards.values()):
        for state in shard.users.values():
            if state.gate.loss_base < state.gate.loss_clone:
                base += 1
            else:
                clone += 1
    return clone, base


class Publisher:
    """Publishes ``trainer``'s snapshot at most every ``every_s`` seconds.

    Counting the gated users walks the users in memory (about 40 ms per 100,000 users: 2 %
    of a core at the default period); the other figures are counters.
    """

    def __init__(
        self,
        trainer: Trainer,
        *,
        every_s: float = 2.0,
        ttl_s: int = DEFAULT_TTL_S,
        telemetry: Telemetry | None = None,
    ) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0 seconds, got {every_s!r}")
        if ttl_s < 2 * every_s:
            raise ValueError(
                f"ttl_s={ttl_s} must be at least twice every_s={every_s}, or a live trainer's "
                f"snapshot would expire between two publishes"
            )
        self.trainer = trainer
        self.every_s = every_s
        self.ttl_s = ttl_s
        self.telemetry = telemetry or Telemetry.of(trainer.store)
        self.started_at = time.time()
        self._last_at = -math.inf  # monotonic time of the last publish
        self._previous: dict[str, Any] | None = None

    def maybe_publish(self, now: float | None = None) -> bool:
        """Publish if ``every_s`` has passed since the last time (``now``: monotonic)."""
        now = time.monotonic() if now is None else now
        if now - self._last_at < self.every_s:
            return False
        self.publish(now)
        return True

    def publish(self, now: float | None = None) -> dict[str, Any]:
        """Build the snapshot, publish it and return it (``now``: monotonic)."""
        self._last_at = time.monotonic() if now is None else now
        snapshot = self.snapshot()
        self.telemetry.publish(self.trainer.owner, snapshot, ttl_s=self.ttl_s)
        return snapshot

    def withdraw(self) -> None:
        """Remove this trainer's snapshot (it is stopping: the dashboard drops it at once)."""
        self.telemetry.withdraw(self.trainer.owner)

    def snapshot(self) -> dict[str, Any]:
        """This trainer's figures now, and what changed since the previous snapshot."""
        at = time.time()
        bounds, cumulative, fresh_count, fresh_sum = _histogram(metrics.FRESHNESS)
        loss = _counter_by(metrics.LOG_LOSS, "events", "model")
        scored = _counter_by(metrics.SCORED, "events", "model")
        auc = _gauge_by(metrics.AUC, "events", "model")
        size_bounds, _, batches, batch_events = _histogram(metrics.BATCH_SIZE)
        _, _, _, batch_seconds = _histogram(metrics.BATCH_SECONDS)
        totals = {
            "applied": self.trainer.applied_total,
            "batches": batches,
            "batch_events": batch_events,
            "batch_seconds": batch_seconds,
            "freshness": cumulative,
            **{f"loss:{e}:{m}": loss.get((e, m), 0.0) for e, m in PAIRS},
            **{f"scored:{e}:{m}": scored.get((e, m), 0.0) for e, m in PAIRS},
        }
        previous = self._previous
        self._previous = {"at": at, **totals}
        window = _window(totals, previous)
        interval = at - previous["at"] if previous else at - self.started_at
        progressive: dict[str, dict[str, Any]] = {}
        for events, model in PAIRS:
            n = totals[f"scored:{events}:{model}"]
            progressive.setdefault(events, {})[model] = {
                "auc": _finite(auc.get((events, model))),
                "events": n,
                "loss_sum": totals[f"loss:{events}:{model}"],
                "window_events": window[f"scored:{events}:{model}"],
                "window_loss_sum": window[f"loss:{events}:{model}"],
            }
        clone_users, base_users = count_gates(self.trainer)
        GATE_USERS.labels("clone").set(clone_users)
        GATE_USERS.labels("base").set(base_users)
        CACHED_USERS.set(clone_users + base_users)
        return {
            "format": SNAPSHOT_FORMAT,
            "owner": self.trainer.owner,
            "name": self.trainer.config.name,
            "pid": os.getpid(),
            "at": at,
            "started_at": self.started_at,
            "interval_s": max(interval, 1e-9),
            "shards": sorted(self.trainer.owned),
            "applied": totals["applied"],
            "window_applied": window["applied"],
            "batches": {
                "count": batches,
                "events": batch_events,
                "seconds": batch_seconds,
                "window_count": window["batches"],
                "window_events": window["batch_events"],
                "window_seconds": window["batch_seconds"],
                "size_bounds": _finite_bounds(size_bounds),
            },
            "freshness": {
                "le": _finite_bounds(bounds),  # the last bucket, +Inf, is implied
                "window": _buckets(window["freshness"]),
                "count": fresh_count,
                "sum": fresh_sum,
            },
            "progressive": progressive,
            "users": {"cached": clone_users + base_users, "served_base": base_users},
        }


def _finite_bounds(bounds: Sequence[float]) -> list[float]:
    """Bucket bounds without the last, ``+Inf``, which JSON cannot spell."""
    return [b for b in bounds if math.isfinite(b)]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _window(totals: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """``totals - previous`` per figure; a counter that went down (a reset) counts from 0."""
    window: dict[str, Any] = {}
    for name, value in totals.items():
        before = previous.get(name) if previous else None
        if isinstance(value, list):
            if not isinstance(before, list) or len(before) != len(value):
                before = [0.0] * len(value)
            if any(v < b for v, b in zip(value, before, strict=True)):
                before = [0.0] * len(value)
            window[name] = [v - b for v, b in zip(value, before, strict=True)]
        else:
            window[name] = value - before if before is not None and value >= before else value
    return window


def _buckets(cumulative: Sequence[float]) -> list[float]:
    """Per-bucket counts from cumulative ones."""
    return [c - (cumulative[i - 1] if i else 0.0) for i, c in enumerate(cumulative)]


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The ``q`` quantile of per-bucket ``counts`` under upper ``bounds`` (``+Inf`` last),
    interpolated linearly inside the bucket, as Prometheus' ``histogram_quantile`` does
    (a rank in the ``+Inf`` bucket answers the highest finite bound). ``None``: no counts."""
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, (bound, count) in enumerate(zip(bounds, counts, strict=True)):
        if count > 0 and seen + count >= rank:
            if math.isinf(bound):
                return bounds[i - 1] if i else None
            lower = bounds[i - 1] if i else 0.0
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
    finite = [b for b in bounds if not math.isinf(b)]
    return finite[-1] if finite else None


Buckets = tuple[list[float], list[float]]  # upper bounds (+Inf last), counts


def _add_buckets(total: Buckets | None, freshness: Mapping[str, Any]) -> Buckets | None:
    """``total`` plus a snapshot's freshness window (bounds must agree; else it is left out)."""
    bounds, window = freshness.get("le"), freshness.get("window")
    if not bounds or not window or len(bounds) + 1 != len(window):
        return total
    bounds = [*bounds, math.inf]
    if total is None:
        return bounds, list(window)
    if total[0] != bounds:
        return total
    return bounds, [a + b for a, b in zip(total[1], window, strict=True)]


def summarize(
    snapshots: Iterable[Mapping[str, Any]], *, now: float | None = None
) -> dict[str, Any]:
    """The live trainers' snapshots merged into the dashboard's figures.

    Windows add up exactly (events/s, windowed log loss, freshness quantiles); AUC is not
    additive, so the trainers' windowed AUCs are averaged, weighted by the events each has
    scored (at most its window of ``metrics.AUC_WINDOW``).
    """
    now = time.time() if now is None else now
    trainers: list[dict[str, Any]] = []
    freshness: Buckets | None = None
    rate = applied = cached = served_base = 0.0
    merged: dict[str, dict[str, dict[str, float]]] = {}
    for snap in snapshots:
        interval = max(float(snap.get("interval_s", 1.0)), 1e-9)
        users = snap.get("users", {})
        trainer_rate = float(snap.get("window_applied", 0)) / interval
        trainers.append(
            {
                "owner": snap.get("owner"),
                "name": snap.get("name"),
                "shards": snap.get("shards", []),
                "applied": snap.get("applied", 0),
                "rate": trainer_rate,
                "cached_users": users.get("cached", 0),
                "served_base": users.get("served_base", 0),
                "age_s": max(0.0, now - float(snap.get("at", now))),
            }
        )
        rate += trainer_rate
        applied += float(snap.get("applied", 0))
        cached += float(users.get("cached", 0))
        served_base += float(users.get("served_base", 0))
        freshness = _add_buckets(freshness, snap.get("freshness") or {})
        for events, models in (snap.get("progressive") or {}).items():
            for model, figures in models.items():
                acc = merged.setdefault(events, {}).setdefault(
                    model, {"auc_w": 0.0, "auc_sum": 0.0, "n": 0.0, "loss": 0.0, "wn": 0.0,
                            "wloss": 0.0}
                )  # fmt: skip
                n = float(figures.get("events", 0))
                if figures.get("auc") is not None and n > 0:
                    weight = min(n, metrics.AUC_WINDOW)
                    acc["auc_w"] += weight
                    acc["auc_sum"] += weight * float(figures["auc"])
                acc["n"] += n
                acc["loss"] += float(figures.get("loss_sum", 0.0))
                acc["wn"] += float(figures.get("window_events", 0))
                acc["wloss"] += float(figures.get("window_loss_sum", 0.0))
    progressive = {
        events: {
            model: {
                "auc": acc["auc_sum"] / acc["auc_w"] if acc["auc_w"] else None,
                "log_loss": acc["loss"] / acc["n"] if acc["n"] else None,
                "window_log_loss": acc["wloss"] / acc["wn"] if acc["wn"] else None,
                "events": acc["n"],
                "window_events": acc["wn"],
            }
            for model, acc in models.items()
        }
        for events, models in merged.items()
    }
    bounds, counts = freshness if freshness else ([], [])
    return {
        "trainers": trainers,
        "applied": applied,
        "rate": rate,
        "cached_users": cached,
        "served_base": served_base,
        "progressive": progressive,
        "freshness": {
            "p50": histogram_quantile(0.5, bounds, counts) if counts else None,
            "p99": histogram_quantile(0.99, bounds, counts) if counts else None,
            "events": sum(counts),
        },
    }
