"""Off-policy estimates of a candidate policy's click rate from a log that carries propensities.

The estimand (docs/CONTRACTS.md, "Off-policy evaluation") is the **top-slot click rate**: the
expected click of the item the candidate policy would put first, over the logged ranking
decisions, with the candidate's model in the state the logged stream left it in. Each logged
decision contributes the shown item ``a`` of slot 0, its logging propensity ``mu(a)``, the
candidate's probability ``pi(a)`` of the same item in slot 0, and the click ``r``:

- IPS:   mean of ``w r`` with ``w = pi(a) / mu(a)``; unbiased, high variance.
- SNIPS: ``sum(w r) / sum(w)``; self-normalized, slightly biased, far steadier.
- DR:    mean of ``sum_b pi(b) q(b) + w (r - q(a))``, ``q`` a reward model (the candidate's
  own predicted click probability); unbiased when either ``q`` or the propensities are right.

The 95 % intervals are normal (CLT) intervals whose variance is clustered by user: a user's
decisions are not independent (the same clone scores them, and it learns from each), so the
user, not the decision, is the unit that is resampled in thought. A bootstrap over users would
give the same answer asymptotically at ``resamples`` times the cost; the closed form keeps the
dashboard's periodic estimate bounded. Pure numpy: no model, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedlearn.model.metrics import json_dict

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Scored:
    """One row per logged decision: what every estimator needs, as float arrays.

    ``users`` (integers) are the clusters of the interval; ``target`` is ``pi(a)``,
    ``propensity`` is ``mu(a)``, ``q_logged`` is ``q(a)`` and ``q_target`` is
    ``sum_b pi(b) q(b)``.
    """

    users: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    target: np.ndarray
    q_logged: np.ndarray
    q_target: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.reward)
        for name in ("users", "propensity", "target", "q_logged", "q_target"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, reward has {n}")
        bad = ~((self.propensity > 0) & (self.propensity <= 1))
        if bad.any():
            at = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"propensity must be in (0, 1], decision {at} has {float(self.propensity[at])!r}; "
                "a log whose shown items could not have been shown cannot be reweighted"
            )


@dataclass(frozen=True)
class Estimate:
    """An estimated click rate with its 95 % interval, and what it rests on."""

    estimator: str
    value: float
    low: float
    high: float
    n: int  # decisions
    users: int  # clusters of the interval
    ess: float  # effective sample size of the weights, (sum w)^2 / sum w^2

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def to_dict(self) -> dict[str, float | int | str]:
        return json_dict(self)


def _clustered_ratio(
    numerator: np.ndarray, denominator: np.ndarray, users: np.ndarray
) -> tuple[float, float]:
    """``sum(numerator) / sum(denominator)`` and its standard error, linearized (delta
    method) and clustered by ``users``: residuals are summed per user before squaring."""
    total = float(denominator.sum())
    value = float(numerator.sum()) / total
    residual = numerator - value * denominator
    _, cluster = np.unique(users, return_inverse=True)
    per_user = np.bincount(cluster, weights=residual)
    g = len(per_user)
    if g < 2:
        return value, math.inf
    variance = g / (g - 1) * float(per_user @ per_user) / total**2
    return value, math.sqrt(variance)


def mean_estimate(name: str, values: np.ndarray, users: np.ndarray) -> Estimate:
    """The mean of ``values`` with its user-clustered 95 % interval (the on-policy value)."""
    if len(values) == 0:
        raise ValueError("no values to average")
    value, se = _clustered_ratio(values, np.ones(len(values)), users)
    n_users = len(np.unique(users))
    return Estimate(
        name, value, value - Z95 * se, value + Z95 * se, len(values), n_users, len(values)
    )


def estimate(scored: Scored) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of the candidate's top-slot click rate (module docstring)."""
    n = len(scored.reward)
    if n == 0:
        raise ValueError("no logged decisions to evaluate: the log is empty")
    w = scored.target / scored.propensity
    r = scored.reward
    ones = np.ones(n)
    sum_w = float(w.sum())
    ess = sum_w**2 / float(w @ w) if sum_w > 0 else 0.0
    terms = {
        "ips": (w * r, ones),
        "snips": (w * r, w),
        "dr": (scored.q_target + w * (r - scored.q_logged), ones),
    }
    out = {}
    for name, (numerator, denominator) in terms.items():
        if float(denominator.sum()) <= 0:  # SNIPS when the candidate never agrees with the log
            value, se = math.nan, math.inf
        else:
            value, se = _clustered_ratio(numerator, denominator, scored.users)
        out[name] = Estimate(
            name, value, value - Z95 * se, value + Z95 * se, n, len(np.unique(scored.users)), ess
        )
    return out
