"""A user's clone: the shared base plus the user's sparse delta, learning online.

The clone speaks River's verbs (``predict_proba_one``, ``learn_one``) so it reads like any
online model; the workers use :func:`fedlearn.model.batch.learn_many`, which applies the same
step to many users at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedlearn.model import fm
from fedlearn.model.base import Base
from fedlearn.model.block import RowTable, encode
from fedlearn.model.delta import Delta
from fedlearn.model.gating import served


class Clone:
    """``base + delta``, trained with SGD at ``lr`` and an L2 pull ``l2`` toward the base.

    ``bias_lr`` is the step of the user's intercept (``lr`` when not given); ``max_rows`` caps
    the delta's rows, least recently used evicted first (``None``: no cap). Steps are clipped
    and the delta kept in a bounded box (``fm.MAX_STEP``, ``fm.MAX_DELTA``). Predicting reads
    the base and the delta and never writes to either.
    """

    __slots__ = ("base", "bias_lr", "delta", "l2", "lr", "max_rows")

    def __init__(
        self,
        base: Base,
        delta: Delta | None = None,
        *,
        lr: float = 0.05,
        l2: float = 0.0,
        bias_lr: float | None = None,
        max_rows: int | None = None,
    ) -> None:
        bias_lr = lr if bias_lr is None else bias_lr
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be at least 1 (or None for no cap), got {max_rows}")
        if lr <= 0 or bias_lr <= 0:
            raise ValueError(f"lr and bias_lr must be positive, got {lr} and {bias_lr}")
        if l2 < 0:
            raise ValueError(f"l2 must be zero or positive, got {l2}")
        if delta is not None and delta.n_factors != base.n_factors:
            raise ValueError(
                f"delta has {delta.n_factors} factors but base {base.version!r} has "
                f"{base.n_factors}"
            )
        self.base = base
        self.delta = delta if delta is not None else Delta(base.n_factors)
        self.lr = float(lr)
        self.l2 = float(l2)
        self.bias_lr = float(bias_lr)
        self.max_rows = max_rows

    def predict_proba_many(self, samples: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Click probabilities of many feature dicts (ranking candidates), vectorized."""
        if not samples:
            return np.zeros(0)
        table = RowTable()
        idx, x = encode(samples, table.row_of)
        w, v = _gather(self.base, self.delta, table.names)
        f, _ = fm.forward(self.base.w0 + self.delta.w0, x, w[idx], v[idx])
        return fm.sigmoid(f)

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        """The click probability of one feature dict."""
        return float(self.predict_proba_many([x])[0])

    def learn_one(self, x: Mapping[str, float], y: int | bool) -> float:
        """One test-then-train step; returns the probability predicted before learning."""
        from fedlearn.model.batch import learn_many

        users = {"": self.delta}
        events = [("", x, int(y))]
        p = learn_many(self.base, users, events, self.lr, self.l2, self.bias_lr, self.max_rows)
        return float(p[0])

    def __repr__(self) -> str:
        return (
            f"Clone(base={self.base.version!r}, delta={self.delta!r}, lr={self.lr}, l2={self.l2})"
        )


def served_scores(
    base: Base,
    delta: Delta | None,
    weight: float,
    samples: Sequence[Mapping[str, float]],
    **hyper: object,
) -> np.ndarray:
    """What a user whose gate weighs their clone by ``weight`` is served for each sample: the
    mix of clone and plain base (``gating.served``), scoring only the models the weight needs.
    The server's ranking and the Python client's local ranking both call this."""
    clone_p = Clone(base, delta, **hyper).predict_proba_many(samples) if weight else 0.0
    base_p = 0.0 if weight == 1 else Clone(base, **hyper).predict_proba_many(samples)
    return np.asarray(served(clone_p, base_p, weight), dtype=np.float64)


def _gather(base: Base, delta: Delta, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Clone weights and latents of ``names`` plus one zero row at the end for padding."""
    k = base.n_factors
    w = np.zeros(len(names) + 1)
    v = np.zeros((len(names) + 1, k))
    bw, bv = base.rows(names)
    dw, dv = delta.lookup(names)
    w[:-1] = bw + dw
    v[:-1] = bv + dv
    return w, v
