"""Prometheus metrics of the trainers: throughput, freshness, and the shadow comparison.

Progressive validation happens for free in a test-then-train loop: every event was predicted
by the clone (and, in shadow, by the base) before it was learned. The log loss sums are
counters (so ``rate(loss_sum) / rate(events)`` is a windowed mean in PromQL); AUC, which is not
additive, is a gauge over a sliding window of the latest events.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from fedlearn.evaluate.metrics import roc_auc

FIRST_EVENTS = 5  # "a user's first events": the cold start that aggregation should help
AUC_WINDOW = 20_000

EVENTS_APPLIED = Counter("fedlearn_events_applied", "Events applied to clones", ["shard"])
EVENTS_SKIPPED = Counter(
    "fedlearn_events_redelivered_skipped", "Redelivered events skipped (already applied)", ["shard"]
)
BATCH_SECONDS = Histogram(
    "fedlearn_trainer_batch_seconds",
    "Time to apply and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SIZE = Histogram(
    "fedlearn_trainer_batch_events",
    "Entries per batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
FRESHNESS = Histogram(
    "fedlearn_freshness_seconds",
    "From the event's acceptance (its stream id) to its commit into the user's delta",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OWNED_SHARDS = Gauge("fedlearn_trainer_owned_shards", "Shards this trainer owns")
LOG_LOSS = Counter(
    "fedlearn_progressive_log_loss_sum",
    "Sum of progressive log loss (predicted before learning)",
    ["model", "events"],
)
SCORED = Counter("fedlearn_progressive_events", "Events scored progressively", ["model", "events"])
AUC = Gauge(
    "fedlearn_progressive_auc",
    f"Progressive ROC AUC over the latest {AUC_WINDOW} events",
    ["model", "events"],
)

_window: dict[str, deque[tuple[float, float, float]]] = {
    "all": deque(maxlen=AUC_WINDOW),
    "first": deque(maxlen=AUC_WINDOW),
}


def _log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def observe_progressive(
    labels: np.ndarray, clone: np.ndarray, base: np.ndarray, positions: np.ndarray
) -> None:
    """Record a batch's progressive predictions of the clones and, in shadow, of the base."""
    first = positions < FIRST_EVENTS
    for events, mask in (("all", np.ones(len(labels), bool)), ("first", first)):
        if not mask.any():
            continue
        y = labels[mask]
        for model, p in (("clone", clone[mask]), ("base", base[mask])):
            LOG_LOSS.labels(model, events).inc(float(_log_loss(y, p).sum()))
            SCORED.labels(model, events).inc(int(mask.sum()))
        _window[events].extend(zip(y, clone[mask], base[mask], strict=True))
        window = np.asarray(_window[events])
        if len(np.unique(window[:, 0])) == 2:
            AUC.labels("clone", events).set(roc_auc(window[:, 0], window[:, 1]))
            AUC.labels("base", events).set(roc_auc(window[:, 0], window[:, 2]))
