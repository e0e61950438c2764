"""More than averages: per-user comparisons between arms, and paired bootstrap intervals.

All arms of a replay predicted the same live events, so arms can be compared user by user.
Users are the unit that varies (a heavy user is many correlated events), so intervals resample
*users* with replacement and recompute every metric for both arms on the same resample (a
paired bootstrap): the interval of a difference is then narrow when the arms disagree
consistently across users, however noisy each metric is alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlearn.model.metrics import json_dict, log_losses, roc_auc

METRICS = ("auc", "gauc", "log_loss", "auc_first")


@dataclass(frozen=True)
class LiveEvents:
    """What every arm is scored on: the live events' user index, label and the user's
    position (0 for the user's first live event)."""

    users: np.ndarray
    y: np.ndarray
    position: np.ndarray
    first_n: int

    @property
    def n_users(self) -> int:
        return int(self.users.max(initial=-1)) + 1

    @property
    def first(self) -> np.ndarray:
        return self.position < self.first_n


@dataclass(frozen=True)
class Difference:
    """``metric`` of ``arm`` minus the same metric of ``against``, with a 95 % interval."""

    arm: str
    against: str
    metric: str
    diff: float
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return json_dict(self)


def per_user_log_loss(live: LiveEvents, p: np.ndarray) -> np.ndarray:
    """Each user's mean log loss on their live events."""
    counts = np.bincount(live.users, minlength=live.n_users)
    sums = np.bincount(live.users, weights=log_losses(live.y, p), minlength=live.n_users)
    return sums / np.maximum(counts, 1)


def share_worse(live: LiveEvents, p: np.ndarray, reference: np.ndarray, min_events: int) -> float:
    """Share of users with at least ``min_events`` live events whose own log loss under ``p``
    is worse than under ``reference``; ``nan`` when no user has that many."""
    counts = np.bincount(live.users, minlength=live.n_users)
    eligible = counts >= min_events
    if not eligible.any():
        return math.nan
    worse = per_user_log_loss(live, p) > per_user_log_loss(live, reference)
    return float(worse[eligible].mean())


class _ArmStats:
    """One arm's statistics in a form every bootstrap resample reweights cheaply."""

    def __init__(self, live: LiveEvents, p: np.ndarray) -> None:
        self.live = live
        self.all_events = _RankedScores(live.y, p)
        first = live.first
        self.first_events = _RankedScores(live.y[first], p[first])
        self.first_mask = first
        n = live.n_users
        self.events = np.bincount(live.users, minlength=n).astype(np.float64)
        self.loss = np.bincount(live.users, weights=log_losses(live.y, p), minlength=n)
        self.user_auc = _user_aucs(live, p)

    def metrics(self, user_weight: np.ndarray) -> dict[str, float]:
        w = user_weight[self.live.users]
        judged = ~np.isnan(self.user_auc)
        gw = (user_weight * self.events)[judged]
        return {
            "auc": self.all_events.auc(w),
            "gauc": float(gw @ self.user_auc[judged] / gw.sum()) if gw.sum() else math.nan,
            "log_loss": float(user_weight @ self.loss / (user_weight @ self.events)),
            "auc_first": self.first_events.auc(w[self.first_mask]),
        }


class _RankedScores:
    """Labels sorted by score once, with tie groups, so a weighted AUC is two bincounts."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        order = np.argsort(p, kind="stable")
        sorted_p = p[order]
        starts = np.ones(len(p), dtype=bool)
        starts[1:] = sorted_p[1:] != sorted_p[:-1]
        self.order = order
        self.group = np.cumsum(starts) - 1
        self.y = y[order]

    def auc(self, weight: np.ndarray) -> float:
        """AUC with each event counted ``weight`` times (ties count one half)."""
        if not len(self.y):
            return math.nan
        w = weight[self.order]
        pos = np.bincount(self.group, weights=w * self.y)
        neg = np.bincount(self.group, weights=w * (1.0 - self.y))
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return math.nan
        below = np.cumsum(neg) - neg
        return float(pos @ (below + 0.5 * neg) / (total_pos * total_neg))


def _user_aucs(live: LiveEvents, p: np.ndarray) -> np.ndarray:
    """Each user's own AUC (``nan`` for a user with only clicks or only skips)."""
    order = np.argsort(live.users, kind="stable")
    bounds = np.searchsorted(live.users[order], np.arange(live.n_users + 1))
    out = np.full(live.n_users, math.nan)
    for u in range(live.n_users):
        rows = order[bounds[u] : bounds[u + 1]]
        out[u] = roc_auc(live.y[rows], p[rows]) if len(rows) > 1 else math.nan
    return out


def paired_bootstrap(
    live: LiveEvents,
    predictions: Mapping[str, np.ndarray],
    arm: str,
    *,
    resamples: int,
    seed: int = 0,
) -> list[Difference]:
    """Every metric of ``arm`` minus every other arm's, with 95 % percentile intervals from
    ``resamples`` resamples of the users (the same resample for both arms of a difference)."""
    stats = {name: _ArmStats(live, p) for name, p in predictions.items()}
    n = live.n_users
    ones = np.ones(n)
    point = {name: s.metrics(ones) for name, s in stats.items()}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in stats}
    for _ in range(resamples):
        weight = rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64)
        for name, s in stats.items():
            samples[name].append(s.metrics(weight))
    out = []
    for other in stats:
        if other == arm:
            continue
        for metric in METRICS:
            diffs = np.array(
                [a[metric] - b[metric] for a, b in zip(samples[arm], samples[other], strict=True)]
            )
            diffs = diffs[~np.isnan(diffs)]
            low, high = np.percentile(diffs, [2.5, 97.5]) if len(diffs) else (math.nan, math.nan)
            diff = point[arm][metric] - point[other][metric]
            out.append(Difference(arm, other, metric, diff, float(low), float(high)))
    return out


def progressive_auc(y: np.ndarray, p: np.ndarray, points: int) -> list[tuple[int, float]]:
    """The AUC of the events so far at ``points`` evenly spaced moments of the live log:
    ``(events seen, AUC)`` pairs, what progressive validation reports over time."""
    n = len(y)
    ends = sorted({max(2, round(n * (i + 1) / points)) for i in range(points)} & set(range(n + 1)))
    return [(end, roc_auc(y[:end], p[:end])) for end in ends]
