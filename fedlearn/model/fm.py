"""The factorization machine's math on gathered rows, shared by every way of training.

Everything here works on dense blocks that callers gather from their parameter tables: for
``E`` samples with at most ``F`` features each, ``x`` is ``(E, F)`` (zero where a sample has fewer
features), ``w`` is ``(E, F)`` and ``v`` is ``(E, F, k)``. A padded slot has ``x = 0``, so it adds
nothing to the score and receives a zero data gradient. The formulas are the ones in
``docs/CONTRACTS.md``; the O(F k) form of the pairwise term is Rendle's.
"""

from __future__ import annotations

import numpy as np

# Defence in depth against divergence (docs/CONTRACTS.md, "Bounded learning"): whatever the
# input, one SGD step moves a parameter by at most MAX_STEP and a clone's delta stays within
# [-MAX_DELTA, MAX_DELTA]. Both are far outside what normal learning reaches (steps of
# lr x O(1), deltas of a few units), so they change nothing there and River parity holds.
MAX_STEP = 1.0
MAX_DELTA = 16.0


def clip_step(step: np.ndarray) -> np.ndarray:
    """Clip an SGD step elementwise to ``[-MAX_STEP, MAX_STEP]``, in place."""
    return np.clip(step, -MAX_STEP, MAX_STEP, out=step)


def bound_delta(delta: np.ndarray) -> np.ndarray:
    """Keep delta parameters in the box ``[-MAX_DELTA, MAX_DELTA]``, in place."""
    return np.clip(delta, -MAX_DELTA, MAX_DELTA, out=delta)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow warnings for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def forward(
    w0: np.ndarray, x: np.ndarray, w: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores ``(E,)`` and the factor sums ``s = sum_j v_j x_j`` ``(E, k)``."""
    xv = v * x[:, :, None]
    s = xv.sum(axis=1)
    pairwise = 0.5 * (np.einsum("ek,ek->e", s, s) - np.einsum("efk,efk->e", xv, xv))
    return w0 + np.einsum("ef,ef->e", w, x) + pairwise, s


def data_gradients(
    g: np.ndarray, x: np.ndarray, v: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the loss w.r.t. ``w`` ``(E, F)`` and ``v`` ``(E, F, k)`` given ``g = dL/df``."""
    gx = g[:, None] * x
    grad_v = gx[:, :, None] * (s[:, None, :] - v * x[:, :, None])
    return gx, grad_v
