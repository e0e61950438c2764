"""The arithmetic of the trainers' snapshots: windows, bucket counts, quantiles, the merge.

A trainer's snapshot (``fedlearn.trainer.publisher``) carries, beside its totals, a *window*:
what changed since its previous snapshot. Windows of different trainers add up exactly, so
``summarize`` gives the dashboard current rates and quantiles, not averages since each process
started. Pure functions on plain values: no Redis, no Prometheus registry.

Freshness buckets travel without their last bound, ``+Inf``, which JSON cannot spell
(``finite_bounds``); the merge puts it back (``_add_buckets``): both sides live here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fedlearn.telemetry import trainer as metrics


def finite_bounds(bounds: Sequence[float]) -> list[float]:
    """Bucket bounds without the last, ``+Inf``, which JSON cannot spell."""
    return [b for b in bounds if math.isfinite(b)]


def window(totals: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """``totals - previous`` per figure; a counter that went down (a reset) counts from 0."""
    changed: dict[str, Any] = {}
    for name, value in totals.items():
        before = previous.get(name) if previous else None
        if isinstance(value, list):
            if not isinstance(before, list) or len(before) != len(value):
                before = [0.0] * len(value)
            if any(v < b for v, b in zip(value, before, strict=True)):
                before = [0.0] * len(value)
            changed[name] = [v - b for v, b in zip(value, before, strict=True)]
        else:
            changed[name] = value - before if before is not None and value >= before else value
    return changed


def per_bucket(cumulative: Sequence[float]) -> list[float]:
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
