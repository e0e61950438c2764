"""What a round accepts and what it publishes, pure numpy (no Redis, no Celery).

A user's contribution is checked before it counts: a record that does not decode, is larger
than ``max_delta_bytes`` or has more rows than the clones' row cap, holds a non-finite number,
or whose change has a norm no bounded clone can reach, is rejected with its reason (the
reasons are the keys of ``REASONS``). A rejected user's snapshot stays where it was, so its
honest changes count again once its delta is sane (the trainer resets a clone that went
non-finite). The candidate base is checked before it is published: every parameter finite,
every row's norm and the intercept within ``max_row_norm``, the vocabulary within
``max_base_features``. Nothing non-finite is ever aggregated or published.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedlearn.model import Base, Delta

REASONS = {
    "unreadable": "the delta or snapshot record does not decode",
    "oversized": "more bytes or rows than a clone may have",
    "non_finite": "a NaN or infinite parameter",
    "norm": "a change larger than any bounded clone makes",
}
USERS_KEPT = 20  # named users per reason in a round record: enough to look into, bounded


@dataclass
class Rejections:
    """How many users were rejected per reason, and the first ``USERS_KEPT`` of each."""

    counts: dict[str, int] = field(default_factory=dict)
    users: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, user: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"rejection reason must be one of {sorted(REASONS)}, got {reason!r}")
        self.counts[reason] = self.counts.get(reason, 0) + 1
        named = self.users.setdefault(reason, [])
        if len(named) < USERS_KEPT:
            named.append(user)

    def merge(self, other: Mapping[str, Any]) -> None:
        """Add another ``to_json()`` (a shard's) to these."""
        for reason, n in other.get("counts", {}).items():
            self.counts[reason] = self.counts.get(reason, 0) + int(n)
        for reason, names in other.get("users", {}).items():
            mine = self.users.setdefault(reason, [])
            mine.extend(names[: USERS_KEPT - len(mine)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "users": {r: list(u) for r, u in self.users.items()}}


def is_finite(model: Base | Delta) -> bool:
    """Whether every parameter of a base or delta is a finite number."""
    return bool(np.isfinite(model.w0) and np.isfinite(model.w).all() and np.isfinite(model.v).all())


def record_problem(blob: bytes, *, max_bytes: int) -> str | None:
    """Why a stored delta record cannot count before decoding it (``None``: go on). Checked
    first so an enormous record is never decoded."""
    return "oversized" if len(blob) > max_bytes else None


def delta_problem(delta: Delta, *, max_rows: int) -> str | None:
    """Why a decoded delta (or snapshot) cannot count, ``None`` if it can."""
    if len(delta) > max_rows:
        return "oversized"
    if not is_finite(delta):
        return "non_finite"
    return None


def norm_problems(norms: np.ndarray, *, max_norm: float) -> np.ndarray:
    """Per user, ``"non_finite"``, ``"norm"`` or ``""``. A NaN norm fails (``NaN > x`` is
    false, so the test is written as "not within the bound")."""
    out = np.full(len(norms), "", dtype=object)
    out[~(norms <= max_norm)] = "norm"
    out[~np.isfinite(norms)] = "non_finite"
    return out


class CandidateRefused(ValueError):
    """A candidate base failed its checks; the message says which and by how much."""


def check_candidate(base: Base, *, max_row_norm: float, max_features: int) -> dict[str, Any]:
    """Raise :class:`CandidateRefused` unless ``base`` is fit to publish; returns the figures
    it was judged on (for the round's record)."""
    w = base.w.astype(np.float64)
    v = base.v.astype(np.float64).reshape(base.n_features, base.n_factors)
    if not is_finite(base):
        bad = int((~np.isfinite(w)).sum() + (~np.isfinite(v)).any(axis=1).sum())
        raise CandidateRefused(
            f"candidate base {base.version} has non-finite parameters (w0={base.w0}, {bad} "
            f"row(s)); nothing non-finite is published"
        )
    row_norm = np.sqrt(w * w + (v * v).sum(axis=1))
    largest = float(row_norm.max()) if len(row_norm) else 0.0
    figures = {"max_row_norm": largest, "w0": float(base.w0), "features": base.n_features}
    worst = _first(base.features[int(i)] for i in np.flatnonzero(row_norm > max_row_norm))
    if worst is not None or abs(base.w0) > max_row_norm:
        where = f"row {worst!r}" if worst is not None else "the intercept"
        raise CandidateRefused(
            f"candidate base {base.version}: {where} has norm {max(largest, abs(base.w0)):.4g} "
            f"> max_row_norm={max_row_norm}; raise aggregation_max_row_norm if that is sane"
        )
    if base.n_features > max_features:
        raise CandidateRefused(
            f"candidate base {base.version} has {base.n_features} features > "
            f"max_base_features={max_features}; raise aggregation_max_base_features or "
            f"min_row_users"
        )
    return figures


def _first(items: Iterable[str]) -> str | None:
    return next(iter(items), None)
