"""The compiled test-then-train loop: one pass over a batch's events, no Python per event.

This is :func:`fedlearn.model.batch.learn_many`'s step loop compiled with numba. The numpy loop
in ``batch.py`` stays the readable reference; ``tests/test_model_parity.py`` holds the two
together to 1e-9 and both to River to 1e-6. The numpy loop is vectorized across users one step
at a time, so a bursty batch (a user rating films in a row) costs many numpy calls of a few
events each; here the events simply run in input order. That is exact: the workspace gives every
(user, feature) its own row and every user its own intercept, so two users never share state
and each user's events still apply in order.

Per event (docs/CONTRACTS.md, "The factorization machine" and "Bounded learning"): the base's
shadow score, the clone's score, then the clipped SGD step with the L2 pull toward the base
on each of the event's rows and on the user's intercept, gradients taken at the old parameters.
``row_scale`` multiplies the step of each workspace row (1 everywhere by default), so a
per-row learning rate needs no other change here.

The gate's loop over the same events (``gate_steps``: each event served by its user's gate,
then the gate updated; ``gating.serve_then_update``) is compiled here too, for the same reason.

numba compiles on first use and keeps the machine code on disk (``cache=True``), so only the
very first process on a machine pays the compile (measured in BENCHMARKS.md). numba writes the
cache beside this file; when the package folder is not writable (a ``pip install`` into a
system prefix), it goes under the data folder (``FEDLEARN_DATA_DIR``, as config.Settings reads
it) unless ``NUMBA_CACHE_DIR`` says otherwise. This module reads the variable itself because
``model`` imports nothing outside ``model``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cache_dir() -> str | None:
    """Where numba should keep its cache, or None for numba's default (beside this file)."""
    if os.environ.get("NUMBA_CACHE_DIR") or os.access(Path(__file__).parent, os.W_OK):
        return None
    data_dir = Path(os.environ.get("FEDLEARN_DATA_DIR", ".fedlearn"))
    return str((data_dir / "numba-cache").resolve())


if (_dir := _cache_dir()) is not None:
    os.environ["NUMBA_CACHE_DIR"] = _dir  # read by numba when it is first imported

import numba  # noqa: E402
import numpy as np  # noqa: E402

from fedlearn.model.fm import MAX_DELTA, MAX_STEP  # noqa: E402


@numba.njit(cache=True, inline="always")
def _clip(value: float, bound: float) -> float:
    return min(max(value, -bound), bound)


@numba.njit(cache=True, inline="always")
def _sigmoid(f: float) -> float:
    return 0.5 * (1.0 + np.tanh(0.5 * f))  # as fm.sigmoid: no overflow for large |f|


@numba.njit(cache=True, nogil=True)
def test_then_train(
    idx: np.ndarray,
    x: np.ndarray,
    uid: np.ndarray,
    y: np.ndarray,
    table: np.ndarray,
    base_rows: np.ndarray,
    dw0: np.ndarray,
    row_scale: np.ndarray,
    w0: float,
    lr: float,
    l2: float,
    bias_lr: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the events ``(idx, x, uid, y)`` in order; returns (clone, base) predictions.

    ``idx (E, F)`` holds workspace rows (``< 0``: padding), ``x (E, F)`` the values, ``uid``
    each event's user, ``y`` its label. ``table (n, 1 + k)`` holds the delta's ``[w, v]`` of
    each workspace row and ``base_rows`` the base's; ``dw0`` each user's intercept delta.
    ``table`` and ``dw0`` are updated in place. Both predictions are made before the update.
    """
    n_events, width = idx.shape
    k = table.shape[1] - 1
    clone_p = np.empty(n_events)
    base_p = np.empty(n_events)
    s = np.empty(k)
    s_base = np.empty(k)
    bias_decay = 1.0 - bias_lr * l2
    for e in range(n_events):
        s[:] = 0.0
        s_base[:] = 0.0
        linear = linear_base = squares = squares_base = 0.0
        for j in range(width):
            r = idx[e, j]
            if r < 0:
                continue
            xj = x[e, j]
            bw = base_rows[r, 0]
            linear += (bw + table[r, 0]) * xj
            linear_base += bw * xj
            for f in range(k):
                bv = base_rows[r, 1 + f] * xj
                cv = bv + table[r, 1 + f] * xj
                s[f] += cv
                s_base[f] += bv
                squares += cv * cv
                squares_base += bv * bv
        pair = pair_base = 0.0
        for f in range(k):
            pair += s[f] * s[f]
            pair_base += s_base[f] * s_base[f]
        u = uid[e]
        p = _sigmoid(w0 + dw0[u] + linear + 0.5 * (pair - squares))
        clone_p[e] = p
        base_p[e] = _sigmoid(w0 + linear_base + 0.5 * (pair_base - squares_base))
        g = p - y[e]
        for j in range(width):
            r = idx[e, j]
            if r < 0:
                continue
            xj = x[e, j]
            step = lr * row_scale[r]
            decay = 1.0 - step * l2
            gx = step * g * xj
            table[r, 0] = _clip(table[r, 0] * decay - _clip(gx, MAX_STEP), MAX_DELTA)
            for f in range(k):
                v = base_rows[r, 1 + f] + table[r, 1 + f]  # the clone's, before this step
                grad = gx * (s[f] - v * xj)
                table[r, 1 + f] = _clip(table[r, 1 + f] * decay - _clip(grad, MAX_STEP), MAX_DELTA)
        dw0[u] = _clip(dw0[u] * bias_decay - _clip(bias_lr * g, MAX_STEP), MAX_DELTA)
    return clone_p, base_p


@numba.njit(cache=True, nogil=True)
def gate_steps(
    uid: np.ndarray,
    clone_loss: np.ndarray,
    base_loss: np.ndarray,
    loss_clone: np.ndarray,
    loss_base: np.ndarray,
    n_events: np.ndarray,
    decay: float,
    eta: float,
    prior: float,
    blend: bool,
) -> np.ndarray:
    """``gating.serve_then_update``'s loop over a batch: each event's clone weight under its
    user's gate as it stood before the event, then the gate updated with the event's losses.

    The users' gates are the arrays ``loss_clone``, ``loss_base``, ``n_events`` (indexed by
    ``uid``), updated in place. The arithmetic is ``Gate.p_clone``/``clone_weight``/``update``
    operation for operation (``math.exp`` is the C library's, as Python's), so the weights and
    gates are the same bits; ``tests/test_model_gating*.py`` hold them.
    """
    weights = np.empty(len(uid))
    for e in range(len(uid)):
        u = uid[e]
        z = eta * (loss_base[u] - loss_clone[u]) + prior
        p = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        weights[e] = p if blend else (1.0 if p >= 0.5 else 0.0)
        if math.isfinite(clone_loss[e]) and math.isfinite(base_loss[e]):
            loss_clone[u] = decay * loss_clone[u] + clone_loss[e]
            loss_base[u] = decay * loss_base[u] + base_loss[e]
            n_events[u] += 1
    return weights


def warm_up() -> None:
    """Compile (or load from numba's disk cache) the kernel now, on a one-event batch, so that
    the first real batch after a start does not pay for it."""
    one = np.ones((1, 1))
    test_then_train(np.zeros((1, 1), np.int64), one, np.zeros(1, np.int64), np.ones(1),
                    np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1), np.ones(1),
                    0.0, 0.1, 0.0, 0.1)  # fmt: skip
    gate_steps(np.zeros(1, np.int64), np.ones(1), np.ones(1), np.zeros(1), np.zeros(1),
               np.zeros(1, np.int64), 0.95, 1.0, 0.0, True)  # fmt: skip
