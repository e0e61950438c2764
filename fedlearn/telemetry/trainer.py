"""Prometheus metrics of the trainers: throughput, freshness, and the shadow comparison.

Progressive validation happens for free in a test-then-train loop: every event was predicted
by the clone (and, in shadow, by the base) before it was learned. The log loss sums are
counters (so ``rate(loss_sum) / rate(events)`` is a windowed mean in PromQL); AUC, which is not
additive, is a gauge over a sliding window of the latest events.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from fedlearn.model.metrics import log_losses, roc_auc

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
CLONE_RESETS = Counter(
    "fedlearn_clone_resets",
    "Clones reset to the base instead of being stored (reason: non_finite)",
    ["reason"],
)
DEAD_LETTERS = Counter(
    "fedlearn_dead_letters",
    "Entries and stored records set aside to the dead-letter stream, by reason",
    ["reason"],
)
OWNED_SHARDS = Gauge("fedlearn_trainer_owned_shards", "Shards this trainer owns")
GATE_USERS = Gauge(
    "fedlearn_gate_users",
    "Users whose clone this trainer holds in memory, by what the serving gate gives them",
    ["served"],
)
CACHED_USERS = Gauge("fedlearn_trainer_cached_users", "Users' clones held in memory")
LOG_LOSS = Counter(  # exposed as ..._log_loss_total: a _sum suffix belongs to histograms
    "fedlearn_progressive_log_loss",
    "Sum of progressive log loss (predicted before learning)",
    ["model", "events"],
)
SCORED = Counter("fedlearn_progressive_events", "Events scored progressively", ["model", "events"])
AUC = Gauge(
    "fedlearn_progressive_auc",
    f"Progressive ROC AUC over the latest {AUC_WINDOW} events",
    ["model", "events"],
)
DRIFT_EVENTS = Counter(
    "fedlearn_drift_events",
    "Drift events the trainer's detectors raised (per shard and over all its shards)",
    ["signal"],
)
DRIFT_ACTIONS = Counter(
    "fedlearn_drift_actions",
    "Actions taken on drift: early_round started, retrain proposed or started",
    ["action"],
)

AUC_EVERY_S = 2.0  # AUC over the window is not free: recompute it at most this often


class _Window:
    """The latest ``AUC_WINDOW`` (label, clone, base) triples in a ring buffer."""

    def __init__(self, size: int) -> None:
        self.data = np.zeros((size, 3))
        self.filled = 0
        self.next = 0
        self.computed_at = -float("inf")

    def extend(self, rows: np.ndarray) -> None:
        rows = rows[-len(self.data) :]
        end = self.next + len(rows)
        if end <= len(self.data):
            self.data[self.next : end] = rows
        else:
            split = len(self.data) - self.next
            self.data[self.next :] = rows[:split]
            self.data[: end - len(self.data)] = rows[split:]
        self.next = end % len(self.data)
        self.filled = min(len(self.data), self.filled + len(rows))


_windows = {"all": _Window(AUC_WINDOW), "first": _Window(AUC_WINDOW)}


class _Pending:
    """What batches observed since the last ``flush``. The figures go to the metrics a few
    batches at a time: per batch, a dozen metric updates and small numpy calls were the most of
    the trainer's metrics stage (benchmarks/bench_trainer_stages.py; BENCHMARKS.md)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # trainers on threads of one process share the metrics
        self.progressive: list[tuple[np.ndarray, ...]] = []
        self.delays: list[np.ndarray] = []
        self.flushed_at = -float("inf")


# A batch reaches the metrics at most this late while batches come, else at the trainer's
# next telemetry snapshot (``trainer.publisher``, every 2 s).
FLUSH_EVERY_S = 0.1
FRESHNESS_SAMPLES = 64  # freshness observations per flush, evenly spaced over its events
_pending = _Pending()


def observe_progressive(
    labels: np.ndarray, clone: np.ndarray, base: np.ndarray, positions: np.ndarray
) -> None:
    """Record a batch's progressive predictions of the clones and, in shadow, of the base
    (at the next ``flush``: within ``FLUSH_EVERY_S``)."""
    with _pending.lock:
        _pending.progressive.append((labels, clone, base, positions))
    _flush_if_due()


def observe_freshness(accepted_ms: np.ndarray, now_ms: float) -> None:
    """Record the freshness of a sample of a batch's events, accepted at ``accepted_ms`` and
    committed at ``now_ms`` (at the next ``flush``, which observes up to
    ``FRESHNESS_SAMPLES`` of them: a per-event observe would cost more than the training)."""
    if len(accepted_ms):
        with _pending.lock:
            _pending.delays.append(np.maximum(0.0, (now_ms - accepted_ms) / 1000.0))
    _flush_if_due()


def _flush_if_due() -> None:
    if time.monotonic() - _pending.flushed_at >= FLUSH_EVERY_S:
        flush()


def flush() -> None:
    """Put what the batches since the last flush observed into the metrics (a snapshot of
    them calls this first)."""
    with _pending.lock:
        now = _pending.flushed_at = time.monotonic()
        progressive, _pending.progressive = _pending.progressive, []
        delays, _pending.delays = _pending.delays, []
        if progressive:
            _record_progressive(*map(np.concatenate, zip(*progressive, strict=True)), now=now)
        if delays:
            _record_freshness(np.concatenate(delays))


def _record_progressive(
    labels: np.ndarray, clone: np.ndarray, base: np.ndarray, positions: np.ndarray, *, now: float
) -> None:
    first = positions < FIRST_EVENTS
    for events, mask in (("all", np.ones(len(labels), bool)), ("first", first)):
        if not mask.any():
            continue
        y = labels[mask]
        for model, p in (("clone", clone[mask]), ("base", base[mask])):
            LOG_LOSS.labels(model, events).inc(float(log_losses(y, p).sum()))
            SCORED.labels(model, events).inc(int(mask.sum()))
        window = _windows[events]
        window.extend(np.column_stack([y, clone[mask], base[mask]]))
        if now - window.computed_at < AUC_EVERY_S:
            continue
        window.computed_at = now
        data = window.data[: window.filled]
        if 0 < data[:, 0].sum() < len(data):
            AUC.labels("clone", events).set(roc_auc(data[:, 0], data[:, 1]))
            AUC.labels("base", events).set(roc_auc(data[:, 0], data[:, 2]))


def _record_freshness(delays: np.ndarray) -> None:
    most = min(FRESHNESS_SAMPLES, len(delays))
    picks = np.unique(np.linspace(0, len(delays) - 1, most).astype(int))
    for delay in delays[picks].tolist():
        FRESHNESS.observe(delay)
