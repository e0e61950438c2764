"""Batch training of the base: vectorized mini-batch Adagrad over the whole log.

The base is trained once a month on everything users did. Adagrad suits an FM over sparse
one-hot features: rare features (a niche film) keep a large step size while frequent ones
settle. L2 is applied lazily to the rows a mini-batch touches, as River does online. A tail
of the log (the most recent events) is held out to choose the number of epochs (and, through
:func:`select_l2`, the regularisation), then the model is refit on all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from fedlearn.model import fm
from fedlearn.model.base import Base
from fedlearn.model.block import RowTable, encode
from fedlearn.model.hashinit import init_latents
from fedlearn.model.metrics import log_losses

Sample = tuple[dict[str, float], int]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of batch training; exactly what gets recorded in the base's header."""

    n_factors: int = 10
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.05
    l2_w: float = 1e-4
    l2_v: float = 1e-4
    init_scale: float = 0.1
    init_seed: int = 0
    seed: int = 0
    valid_fraction: float = 0.1
    patience: int = 2
    refit: bool = True

    def __post_init__(self) -> None:
        for name in ("n_factors", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "init_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("l2_w", "l2_v"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be zero or positive, got {getattr(self, name)}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")


@dataclass
class TrainResult:
    base: Base
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)


class _Params:
    """Learned state with Adagrad accumulators; the last row of ``w``/``v`` is padding."""

    def __init__(self, names: list[str], config: TrainConfig) -> None:
        n, k = len(names), config.n_factors
        self.w0 = 0.0
        self.w = np.zeros(n + 1)
        self.v = np.zeros((n + 1, k))
        self.v[:n] = init_latents(names, k, config.init_seed, config.init_scale)
        self.g0 = 0.0
        self.gw = np.zeros(n + 1)
        self.gv = np.zeros((n + 1, k))

    def copy(self) -> _Params:
        other = object.__new__(_Params)
        other.__dict__ = {
            k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()
        }
        return other


def _step(p: _Params, idx: np.ndarray, x: np.ndarray, y: np.ndarray, c: TrainConfig) -> None:
    f, s = fm.forward(p.w0, x, p.w[idx], p.v[idx])
    g = (fm.sigmoid(f) - y) / len(y)
    grad_w, grad_v = fm.data_gradients(g, x, p.v[idx], s)
    pad = len(p.w) - 1
    flat = np.where(idx < 0, pad, idx).ravel()
    rows, inverse = np.unique(flat, return_inverse=True)
    keep = rows != pad
    rows = rows[keep]
    gw = np.bincount(inverse, weights=grad_w.ravel(), minlength=len(keep))[keep]
    flat_v = grad_v.reshape(-1, grad_v.shape[-1])
    gv = np.stack(
        [
            np.bincount(inverse, weights=flat_v[:, f], minlength=len(keep))
            for f in range(flat_v.shape[1])
        ],
        axis=1,
    )[keep]
    gw += c.l2_w * p.w[rows]
    gv += c.l2_v * p.v[rows]
    g0 = float(g.sum())
    p.g0 += g0 * g0
    p.w0 -= c.lr * g0 / (math.sqrt(p.g0) + 1e-8)
    p.gw[rows] += gw * gw
    p.w[rows] -= c.lr * gw / (np.sqrt(p.gw[rows]) + 1e-8)
    p.gv[rows] += gv * gv
    p.v[rows] -= c.lr * gv / (np.sqrt(p.gv[rows]) + 1e-8)


def _predict(p: _Params, idx: np.ndarray, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(idx))
    for start in range(0, len(idx), chunk):
        sl = slice(start, start + chunk)
        f, _ = fm.forward(p.w0, x[sl], p.w[idx[sl]], p.v[idx[sl]])
        out[sl] = fm.sigmoid(f)
    return out


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from fedlearn.model.metrics import roc_auc

    return float(roc_auc(y, p))


def _fit(
    params: _Params,
    idx: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    epochs: int,
    valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    progress: Callable[[dict[str, float]], None] | None,
) -> tuple[_Params, int, list[dict[str, float]]]:
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, float]] = []
    best, best_epoch, best_loss = params.copy(), 0, math.inf
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y))
        for start in range(0, len(order), config.batch_size):
            b = order[start : start + config.batch_size]
            _step(params, idx[b], x[b], y[b], config)
        record: dict[str, float] = {"epoch": epoch}
        record["train_log_loss"] = float(np.mean(log_losses(y, _predict(params, idx, x))))
        if valid is not None:
            vp = _predict(params, valid[0], valid[1])
            record["valid_log_loss"] = float(np.mean(log_losses(valid[2], vp)))
            record["valid_auc"] = _auc(valid[2], vp)
        history.append(record)
        if progress:
            progress(record)
        if valid is None:
            best, best_epoch = params, epoch
            continue
        if record["valid_log_loss"] < best_loss:
            best, best_epoch, best_loss = params.copy(), epoch, record["valid_log_loss"]
        elif epoch - best_epoch >= config.patience:
            break
    return best, best_epoch, history


def train_base(
    samples: Sequence[Sample],
    config: TrainConfig | None = None,
    *,
    version: str = "1",
    meta: dict[str, Any] | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a base on time-ordered ``(features, label)`` samples.

    With ``valid_fraction > 0`` the most recent samples pick the number of epochs (early
    stopping on log loss); with ``refit`` the chosen number of epochs is then run on all of them.
    """
    config = config or TrainConfig()
    if not samples:
        raise ValueError("cannot train a base on an empty log: no samples were given")
    table = RowTable()
    idx, x = encode([s[0] for s in samples], table.row_of)
    y = np.fromiter((s[1] for s in samples), np.float64, len(samples))
    n_valid = int(len(samples) * config.valid_fraction)
    history: list[dict[str, float]] = []
    epochs = config.epochs
    if n_valid > 0:
        cut = len(samples) - n_valid
        valid = (idx[cut:], x[cut:], y[cut:])
        params, epochs, history = _fit(
            _Params(table.names, config),
            idx[:cut],
            x[:cut],
            y[:cut],
            config,
            config.epochs,
            valid,
            progress,
        )
        for record in history:
            record["phase"] = "select"
    if n_valid == 0 or config.refit:
        params, epochs, refit_history = _fit(
            _Params(table.names, config), idx, x, y, config, max(epochs, 1), None, progress
        )
        history += refit_history
    n = len(table.names)
    base = Base(
        table.names,
        params.w0,
        params.w[:n],
        params.v[:n],
        version=version,
        init_seed=config.init_seed,
        init_scale=config.init_scale,
        hyper={**asdict(config), "epochs_chosen": epochs},
        meta={**(meta or {}), "n_samples": len(samples), "history": history},
    )
    return TrainResult(base, epochs, history)


def select_l2(
    samples: Sequence[Sample], grid: Sequence[float], config: TrainConfig | None = None
) -> tuple[float, list[dict[str, float]]]:
    """The L2 (same for weights and latents) with the best validation log loss on the tail."""
    config = config or TrainConfig()
    if config.valid_fraction <= 0:
        raise ValueError("select_l2 needs valid_fraction > 0 to hold out a validation tail")
    results = []
    for l2 in grid:
        trial = replace(config, l2_w=l2, l2_v=l2, refit=False)
        history = train_base(samples, trial).history
        best = min(h["valid_log_loss"] for h in history)
        results.append({"l2": l2, "valid_log_loss": best})
    chosen = min(results, key=lambda r: r["valid_log_loss"])["l2"]
    return chosen, results
