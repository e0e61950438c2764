"""The batched clone update: many users' events, each user's in order, vectorized across users.

Users' clones are independent, so the ``t``-th event of every user in a batch can be applied in
one vectorized step. The work is laid out in a *workspace*: one row per (user, feature) pair of
the batch, holding the base's values and the user's delta for that feature. Within one step no
two events share a workspace row (one event per user, each feature once per event), so plain
fancy-index assignment is exact. Predictions are made before each update (test, then train).

A real log is bursty (a user rates films in a row), so a batch of 1,000 events often takes
hundreds of steps of a few events each: the cost is numpy calls per step, not arithmetic.
Hence weight and latents share one table (``[w, v_0 .. v_k-1]`` per row, one gather and one
scatter per step) and the events are sorted by step once, so each step reads contiguous slices.
That numpy loop is the readable reference; what runs by default is the same step compiled
(``kernel.py``), which walks the events in input order without Python per event.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from itertools import pairwise

import numpy as np

from fedlearn.model import fm
from fedlearn.model.base import Base
from fedlearn.model.block import PAD
from fedlearn.model.delta import Delta
from fedlearn.model.features import USER_PREFIX

LabelledEvent = tuple[str, Mapping[str, float], int]
ENGINES = ("compiled", "numpy")  # kernel.test_then_train, or the numpy loop below (reference)


class _Workspace:
    """Per (user, feature) rows of the batch; the last row is the zero padding row."""

    def __init__(self, events: Sequence[LabelledEvent]) -> None:
        self.users: list[str] = []
        self.names_of_user: list[dict[str, int]] = []
        self.row_names: list[str] = []
        user_index: dict[str, int] = {}
        uid: list[int] = []
        position: list[int] = []
        lengths: list[int] = []
        flat_rows: list[int] = []
        flat_values: list[float] = []
        seen: list[int] = []
        row_names = self.row_names
        for user, x, _ in events:
            u = user_index.get(user)
            if u is None:
                u = user_index[user] = len(self.users)
                self.users.append(user)
                self.names_of_user.append({})
                seen.append(0)
            uid.append(u)
            position.append(seen[u])
            seen[u] += 1
            rows_of_name = self.names_of_user[u]
            for name in x:
                row = rows_of_name.get(name)
                if row is None:
                    row = rows_of_name[name] = len(row_names)
                    row_names.append(name)
                flat_rows.append(row)
            flat_values.extend(x.values())
            lengths.append(len(x))
        self.idx, self.x = pad_flat(flat_rows, flat_values, np.array(lengths, dtype=np.int64))
        self.last_use = _last_use(flat_rows, len(row_names))
        self.uid = np.array(uid, dtype=np.int64)
        self.position = np.array(position, dtype=np.int64)
        self.events_of_user = np.array(seen, dtype=np.int64)

    def load(self, base: Base, deltas: MutableMapping[str, Delta]) -> None:
        """Gather base rows and the users' delta rows into ``[w, v]`` tables (+ padding row)."""
        k = base.n_factors
        n = len(self.row_names) + 1
        bw, bv = base.rows(self.row_names)
        self.base_rows = np.zeros((n, 1 + k))
        self.base_rows[:-1, 0] = bw
        self.base_rows[:-1, 1:] = bv
        self.delta_rows = np.zeros((n, 1 + k))
        self.dw0 = np.zeros(len(self.users))
        self.prior_events = np.zeros(len(self.users), dtype=np.int64)
        self.rows_in_delta: list[np.ndarray] = []
        self.rows_in_ws: list[np.ndarray] = []
        for u, user in enumerate(self.users):
            delta = deltas.get(user)
            if delta is None:
                delta = deltas[user] = Delta(k)
            rows_of_name = self.names_of_user[u]
            drows = delta.rows_of(rows_of_name)
            wrows = np.fromiter(rows_of_name.values(), np.int64, len(rows_of_name))
            self.delta_rows[wrows, 0] = delta._w[drows]
            self.delta_rows[wrows, 1:] = delta._v[drows]
            self.dw0[u] = delta.w0
            self.prior_events[u] = delta.n_events
            self.rows_in_delta.append(drows)
            self.rows_in_ws.append(wrows)

    def row_scale(self, shared: float) -> np.ndarray:
        """Step multiplier per workspace row: 1 for the user's own ``user=`` row, ``shared``
        for item and context rows (which every user has, and the rounds move), 0 for padding."""
        return np.append(row_scales(self.row_names, shared), 0.0)

    def event_scale(self, half_life: float | None) -> np.ndarray:
        """Step multiplier per event: ``h / (h + n)`` for a user's ``n``-th event so far
        (large for a new user's first events, smaller as evidence piles up); 1 without ``h``."""
        if half_life is None:
            return np.ones(len(self.uid))
        return half_life / (half_life + self.prior_events[self.uid] + self.position)

    def store(self, deltas: MutableMapping[str, Delta]) -> None:
        """Write the workspace's delta rows back into the users' deltas."""
        for u, user in enumerate(self.users):
            delta = deltas[user]
            drows, wrows = self.rows_in_delta[u], self.rows_in_ws[u]
            delta._w[drows] = self.delta_rows[wrows, 0]
            delta._v[drows] = self.delta_rows[wrows, 1:]
            delta.w0 = float(self.dw0[u])
            delta.n_events += int(self.events_of_user[u])
            # The rows this batch used, oldest use first, become the delta's most recent rows.
            used = wrows[np.argsort(self.last_use[wrows], kind="stable")]
            delta.touch(self.row_names[r] for r in used.tolist())


def user_index(users: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """A batch's users in order of first event, and each event's user among them: built once
    per batch and handed to the table, the positions and the gate (each built its own)."""
    batch_users = list(dict.fromkeys(users))
    position = dict(zip(batch_users, range(len(batch_users)), strict=True))
    return batch_users, np.fromiter(map(position.__getitem__, users), np.int64, len(users))


def row_scales(names: Sequence[str], shared: float) -> np.ndarray:
    """Step multiplier of rows ``names``: 1 for a user's own ``user=`` row, ``shared`` for
    item and context rows (which every user has, and the rounds move)."""
    return np.array([1.0 if n.startswith(USER_PREFIX) else shared for n in names])


def _last_use(flat_rows: list[int], n_rows: int) -> np.ndarray:
    """For each workspace row, the position of its last use in the flat (event-ordered) list."""
    last = np.full(n_rows, -1, dtype=np.int64)
    if flat_rows:
        backwards = np.asarray(flat_rows, dtype=np.int64)[::-1]
        rows, first_backwards = np.unique(backwards, return_index=True)
        last[rows] = len(flat_rows) - 1 - first_backwards
    return last


def pad_flat(
    flat_rows: Sequence[int] | np.ndarray, flat_values: list[float], lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(E, F)`` row and value matrices from flat per-event lists, padded with ``PAD``/0."""
    n, width = len(lengths), int(lengths.max(initial=1))
    idx = np.full((n, width), PAD, dtype=np.int64)
    x = np.zeros((n, width))
    if len(flat_rows):
        # Position of each feature within its event: 0..len-1, event after event.
        starts = np.cumsum(lengths) - lengths
        col = np.arange(len(flat_rows)) - np.repeat(starts, lengths)
        sample = np.repeat(np.arange(n), lengths)
        idx[sample, col] = flat_rows
        x[sample, col] = flat_values
    return idx, x


def learn_many(
    base: Base,
    deltas: MutableMapping[str, Delta],
    events: Sequence[LabelledEvent],
    lr: float,
    l2: float = 0.0,
    bias_lr: float | None = None,
    max_rows: int | None = None,
    *,
    engine: str = "compiled",
    shared_lr_scale: float = 1.0,
    lr_half_life: float | None = None,
) -> np.ndarray:
    """Test-then-train ``events`` (``(user, features, label)``) on the users' clones.

    Each user's events are applied in their order in ``events``; ``deltas`` is updated in place
    (a user without a delta gets a new one). ``bias_lr`` is the step of the user's own intercept
    (River's ``intercept_lr``; ``lr`` when not given). After the batch, a delta longer than
    ``max_rows`` loses its least recently used rows (``None``: no cap). ``shared_lr_scale``
    multiplies the step of item and context rows (the user's own ``user=`` row and intercept
    keep the full step); with ``lr_half_life`` = ``h``, a user's ``n``-th event steps by
    ``h / (h + n)`` of the step. Every step is clipped
    and every delta parameter kept within ``fm.MAX_DELTA``. Returns the probability predicted
    for each event before its update, in input order. ``engine`` is ``"compiled"`` (numba,
    ``kernel.py``) or ``"numpy"`` (the readable reference, held to the same results).
    """
    levers = {"shared_lr_scale": shared_lr_scale, "lr_half_life": lr_half_life}
    return _learn(
        base, deltas, events, lr, l2, bias_lr, max_rows, shadow=False, engine=engine, **levers
    )[0]


def learn_many_shadow(
    base: Base,
    deltas: MutableMapping[str, Delta],
    events: Sequence[LabelledEvent],
    lr: float,
    l2: float = 0.0,
    bias_lr: float | None = None,
    max_rows: int | None = None,
    *,
    engine: str = "compiled",
    shared_lr_scale: float = 1.0,
    lr_half_life: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`learn_many`, also returning what the base alone predicted for each event.

    The shadow score costs one more forward pass on rows already gathered, which is why the
    trainer gets it here rather than from a separate ``Clone(base)`` pass.
    """
    levers = {"shared_lr_scale": shared_lr_scale, "lr_half_life": lr_half_life}
    return _learn(
        base, deltas, events, lr, l2, bias_lr, max_rows, shadow=True, engine=engine, **levers
    )


def _learn(
    base: Base,
    deltas: MutableMapping[str, Delta],
    events: Sequence[LabelledEvent],
    lr: float,
    l2: float,
    bias_lr: float | None,
    max_rows: int | None,
    *,
    shadow: bool,
    engine: str = "compiled",
    shared_lr_scale: float = 1.0,
    lr_half_life: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not events:
        return np.zeros(0), np.zeros(0)
    bias_lr = lr if bias_lr is None else bias_lr
    ws = _Workspace(events)
    ws.load(base, deltas)
    y = np.fromiter((e[2] for e in events), np.float64, len(events))
    # The kernel takes a per-row step multiplier; the per-event one (a replay-only lever, see
    # evaluate/tuning.py) runs in the numpy reference.
    if engine == "compiled" and lr_half_life is None:
        from fedlearn.model.kernel import test_then_train

        row_scale = (
            np.ones(len(ws.delta_rows)) if shared_lr_scale == 1.0 else ws.row_scale(shared_lr_scale)
        )
        args = (ws.delta_rows, ws.base_rows, ws.dw0, row_scale, base.w0, lr, l2, bias_lr)
        predictions, base_predictions = test_then_train(ws.idx, ws.x, ws.uid, y, *args)
        if not shadow:
            base_predictions = np.zeros(0)
    else:
        levers = {"shared_lr_scale": shared_lr_scale, "lr_half_life": lr_half_life}
        predictions, base_predictions = _numpy_steps(
            base, ws, y, lr, l2, bias_lr, shadow=shadow, **levers
        )
    ws.store(deltas)
    if max_rows is not None:
        for user in ws.users:
            deltas[user].evict(max_rows)
    return predictions, base_predictions


def _numpy_steps(
    base: Base,
    ws: _Workspace,
    y: np.ndarray,
    lr: float,
    l2: float,
    bias_lr: float,
    *,
    shadow: bool,
    shared_lr_scale: float = 1.0,
    lr_half_life: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The readable reference of ``kernel.test_then_train``: one vectorized step per event
    position, across users. Updates the workspace; returns (clone, base) predictions."""
    base_predictions = np.zeros(0)
    if shadow:
        rows = ws.base_rows[ws.idx]
        f, _ = fm.forward(base.w0, ws.x, rows[..., 0], rows[..., 1:])
        base_predictions = fm.sigmoid(f)
    # Sort the events by step once, so that every step reads contiguous slices (views).
    order = np.argsort(ws.position, kind="stable")
    bounds = np.searchsorted(ws.position[order], np.arange(int(ws.position.max()) + 2)).tolist()
    idx_all, x_all, uid_all, y_all = ws.idx[order], ws.x[order], ws.uid[order], y[order]
    x3_all = x_all[:, :, None]
    # The levers: per-event and per-row step multipliers (all ones by default, so skipped).
    event_scale = ws.event_scale(lr_half_life)[order]
    lr_all, bias_lr_all = lr * event_scale, bias_lr * event_scale
    row_scale = ws.row_scale(shared_lr_scale) if shared_lr_scale != 1.0 else None
    sorted_predictions = np.empty(len(y))
    table, base_rows, dw0_all, w0 = ws.delta_rows, ws.base_rows, ws.dw0, base.w0
    # d - lr (grad + l2 d) = d (1 - lr l2) - lr grad: the L2 pull as a decay, one op fewer.
    decay, bias_decay = 1.0 - lr * l2, 1.0 - bias_lr * l2
    for a, b in pairwise(bounds):
        idx, x3, u = idx_all[a:b], x3_all[a:b], uid_all[a:b]
        d = table.take(idx, axis=0)  # (e, F, 1 + k): the delta's [w, v] of each slot
        xt = base_rows.take(idx, axis=0)
        xt += d  # the clone's [w, v] ...
        xt *= x3  # ... times x: [w x, v x] per slot
        xv = xt[:, :, 1:]
        sums = xt.sum(axis=1)  # [sum_j w_j x_j, s_0 .. s_k-1]
        s = sums[:, 1:]
        # The FM of docs/CONTRACTS.md in Rendle's O(F k) form, as fedlearn.model.fm.forward.
        sq_s = np.matmul(s[:, None, :], s[:, :, None])[:, 0, 0]
        interactions = 0.5 * (sq_s - np.square(xv).sum(axis=(1, 2)))
        dw0 = dw0_all[u]
        f = dw0 + w0
        f += sums[:, 0]
        f += interactions
        p = 0.5 * (1.0 + np.tanh(0.5 * f))
        sorted_predictions[a:b] = p
        g = p - y_all[a:b]
        # Gradients at the old parameters, [g x, g x (s - v x)] per slot (0 in padding slots):
        # with a 1 in the w column of the sums and a 0 in the w column of xt, one expression.
        sums[:, 0] = 1.0
        xt[:, :, 0] = 0.0
        step = sums[:, None, :] - xt
        step *= (lr_all[a:b] * g)[:, None, None] * x3
        if row_scale is not None:
            step *= row_scale.take(idx)[:, :, None]
        d *= decay
        d -= fm.clip_step(step)
        table[idx] = fm.bound_delta(d)
        bias = dw0 * bias_decay
        bias -= fm.clip_step(bias_lr_all[a:b] * g)
        dw0_all[u] = fm.bound_delta(bias)
        # Padding slots wrote zeros over the padding row; it must stay all zero, and it does,
        # because their x is 0 and the padding row's delta starts at 0.
    predictions = np.empty(len(y))
    predictions[order] = sorted_predictions
    return predictions, base_predictions
