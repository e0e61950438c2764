"""River's own factorization machine as a user of River would run it: the replay's yardstick.

River (``pip install fedlearn[river]``) is optional, so it is imported only here, on first use.
Its FM learns one event at a time (``learn_one``) over feature dicts; a per-user clone is a
``copy.deepcopy`` of the whole model, which is exactly the cost our sparse deltas avoid.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedlearn.evaluate.arms import Arm, LabelledEvent


class RiverMissingError(RuntimeError):
    """River's arms were asked for but the river package is not installed."""


def _river() -> Any:
    try:
        from river import facto, optim
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RiverMissingError(
            "River's arms need the river package: pip install 'fedlearn[river]', "
            "or leave the river-* arms out of --arms"
        ) from exc
    return facto, optim


def train_river_base(
    samples: Sequence[tuple[Mapping[str, float], int]],
    *,
    n_factors: int = 10,
    passes: int = 3,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """``FMClassifier(n_factors)`` with River's defaults, ``passes`` passes of ``learn_one``.

    This is how the issue's reference figures were made; ``progress`` gets the number of
    events learned since its last call.
    """
    facto, _ = _river()
    model = facto.FMClassifier(n_factors=n_factors, seed=seed)
    for _ in range(passes):
        done = 0
        for x, y in samples:
            model.learn_one(x, bool(y))
            done += 1
            if progress and done % 10_000 == 0:
                progress(10_000)
        if progress:
            progress(done % 10_000)
    return model


def with_lr(model: Any, lr: float) -> Any:
    """A deep copy of ``model`` whose weights, latents and intercept all step by ``lr``."""
    _, optim = _river()
    other = copy.deepcopy(model)
    other.weight_optimizer = optim.SGD(lr)
    other.latent_optimizer = optim.SGD(lr)
    other.intercept_lr = optim.schedulers.Constant(lr)
    return other


def _test_then_train(model: Any, x: Mapping[str, float], y: int) -> float:
    p = model.predict_proba_one(x)[True]
    model.learn_one(x, bool(y))
    return p


class RiverFrozenArm(Arm):
    """River's base, never updated."""

    def __init__(self, base: Any, name: str = "river-frozen") -> None:
        self.name = name
        # A copy: River's predict_proba_one creates latents for unseen features (its latents
        # are a defaultdict), which would change the base the other arms copy.
        self.model = copy.deepcopy(base)

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        return np.fromiter(
            (self.model.predict_proba_one(x)[True] for _, x, _ in block), np.float64, len(block)
        )


class RiverGlobalArm(Arm):
    """One River model, a copy of the base at ``lr``, learning from every event."""

    def __init__(self, base: Any, *, lr: float, name: str = "river-global") -> None:
        self.name = name
        self.model = with_lr(base, lr)

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        model = self.model
        return np.fromiter(
            (_test_then_train(model, x, y) for _, x, y in block), np.float64, len(block)
        )


class RiverClonesArm(Arm):
    """A deep copy of the base per user, made on the user's first event."""

    def __init__(self, base: Any, *, lr: float, name: str = "river-clones") -> None:
        self.name = name
        self.base = with_lr(base, lr)
        self.clones: dict[str, Any] = {}

    def _clone(self, user: str) -> Any:
        model = self.clones.get(user)
        if model is None:
            model = self.clones[user] = copy.deepcopy(self.base)
        return model

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        return np.fromiter(
            (_test_then_train(self._clone(u), x, y) for u, x, y in block), np.float64, len(block)
        )


class RiverFedAvgArm(RiverClonesArm):
    """River clones plus naive FedAvg after every block: the base moves by the participants'
    mean change, and users who arrive later copy the moved base.

    A River clone is a full model of its own, so aggregation cannot reach clones that already
    exist without rewriting every one of them; only new users profit, as a River user would
    have it without extra machinery.
    """

    def __init__(self, base: Any, *, lr: float, name: str = "river-clones-fedavg") -> None:
        super().__init__(base, lr=lr, name=name)

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        touched: dict[str, dict[str, None]] = {}
        for user, x, _ in block:
            touched.setdefault(user, {}).update(dict.fromkeys(x))
        start = {user: self._snapshot(user, names) for user, names in touched.items()}
        predictions = super().process(block)
        self._fold(start)
        return predictions

    def _snapshot(self, user: str, names: Mapping[str, None]) -> tuple[float, dict, dict]:
        model = self._clone(user)
        # Reading a latent creates it (River's latents are a defaultdict), as learning would.
        weights = {n: model.weights.get(n, 0.0) for n in names}
        latents = {n: model.latents[n].copy() for n in names}
        return model.intercept, weights, latents

    def _fold(self, start: Mapping[str, tuple[float, dict, dict]]) -> None:
        n = len(start)
        base = self.base
        d_w: dict[str, float] = {}
        d_v: dict[str, np.ndarray] = {}
        d_w0 = 0.0
        for user, (w0, weights, latents) in start.items():
            model = self.clones[user]
            d_w0 += model.intercept - w0
            for name, w in weights.items():
                d_w[name] = d_w.get(name, 0.0) + model.weights.get(name, 0.0) - w
            for name, v in latents.items():
                change = model.latents[name] - v
                d_v[name] = d_v[name] + change if name in d_v else change
        base.intercept += d_w0 / n
        for name, change in d_w.items():
            base.weights[name] += change / n
        for name, change in d_v.items():
            base.latents[name] = base.latents[name] + change / n
