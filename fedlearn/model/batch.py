"""The batched clone update: many users' events, each user's in order, vectorized across users.

Users' clones are independent, so the ``t``-th event of every user in a batch can be applied in
one vectorized step. The work is laid out in a *workspace*: one row per (user, feature) pair of
the batch, holding the base's values and the user's delta for that feature. Within one step no
two events share a workspace row (one event per user, each feature once per event), so plain
fancy-index assignment is exact. Predictions are made before each update (test, then train).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np

from fedlearn.model import fm
from fedlearn.model.base import Base
from fedlearn.model.block import pad_rows
from fedlearn.model.delta import Delta

LabelledEvent = tuple[str, Mapping[str, float], int]


class _Workspace:
    """Per (user, feature) rows of the batch; the last row is the zero padding row."""

    def __init__(self, events: Sequence[LabelledEvent]) -> None:
        self.users: list[str] = []
        self.names_of_user: list[dict[str, int]] = []
        self.row_names: list[str] = []
        user_index: dict[str, int] = {}
        rows_per_event: list[list[int]] = []
        uid = np.empty(len(events), dtype=np.int64)
        position = np.empty(len(events), dtype=np.int64)
        seen: list[int] = []
        row_names = self.row_names
        for i, (user, x, _) in enumerate(events):
            u = user_index.get(user)
            if u is None:
                u = user_index[user] = len(self.users)
                self.users.append(user)
                self.names_of_user.append({})
                seen.append(0)
            uid[i] = u
            position[i] = seen[u]
            seen[u] += 1
            rows_of_name = self.names_of_user[u]
            rows = []
            for name in x:
                row = rows_of_name.get(name)
                if row is None:
                    row = rows_of_name[name] = len(row_names)
                    row_names.append(name)
                rows.append(row)
            rows_per_event.append(rows)
        self.idx, self.x = pad_rows(rows_per_event, [list(e[1].values()) for e in events])
        self.uid = uid
        self.position = position
        self.events_of_user = np.asarray(seen, dtype=np.int64)

    def load(self, base: Base, deltas: MutableMapping[str, Delta]) -> None:
        """Gather base rows (with padding) and the users' delta rows into the workspace."""
        n = len(self.row_names) + 1
        bw, bv = base.rows(self.row_names)
        self.bw = np.concatenate([bw, [0.0]])
        self.bv = np.concatenate([bv, np.zeros((1, base.n_factors))])
        self.dw = np.zeros(n)
        self.dv = np.zeros((n, base.n_factors))
        self.dw0 = np.zeros(len(self.users))
        self.delta_rows: list[np.ndarray] = []
        for u, user in enumerate(self.users):
            delta = deltas.get(user)
            if delta is None:
                delta = deltas[user] = Delta(base.n_factors)
            rows_of_name = self.names_of_user[u]
            drows = delta.rows_of(rows_of_name)
            wrows = np.fromiter(rows_of_name.values(), np.int64, len(rows_of_name))
            self.dw[wrows] = delta._w[drows]
            self.dv[wrows] = delta._v[drows]
            self.dw0[u] = delta.w0
            self.delta_rows.append(drows)

    def store(self, deltas: MutableMapping[str, Delta]) -> None:
        """Write the workspace's delta rows back into the users' deltas."""
        for u, user in enumerate(self.users):
            delta = deltas[user]
            rows_of_name = self.names_of_user[u]
            wrows = np.fromiter(rows_of_name.values(), np.int64, len(rows_of_name))
            drows = self.delta_rows[u]
            delta._w[drows] = self.dw[wrows]
            delta._v[drows] = self.dv[wrows]
            delta.w0 = float(self.dw0[u])
            delta.n_events += int(self.events_of_user[u])


def learn_many(
    base: Base,
    deltas: MutableMapping[str, Delta],
    events: Sequence[LabelledEvent],
    lr: float,
    l2: float = 0.0,
    bias_lr: float | None = None,
) -> np.ndarray:
    """Test-then-train ``events`` (``(user, features, label)``) on the users' clones.

    Each user's events are applied in their order in ``events``; ``deltas`` is updated in place
    (a user without a delta gets a new one). ``bias_lr`` is the step of the user's own intercept
    (River's ``intercept_lr``; ``lr`` when not given). Returns the probability predicted for each
    event before its update, in input order.
    """
    if not events:
        return np.zeros(0)
    bias_lr = lr if bias_lr is None else bias_lr
    ws = _Workspace(events)
    ws.load(base, deltas)
    y = np.fromiter((e[2] for e in events), np.float64, len(events))
    predictions = np.empty(len(events))
    order = np.argsort(ws.position, kind="stable")
    bounds = np.searchsorted(ws.position[order], np.arange(int(ws.position.max()) + 2))
    for t in range(len(bounds) - 1):
        sel = order[bounds[t] : bounds[t + 1]]
        idx, x, u = ws.idx[sel], ws.x[sel], ws.uid[sel]
        dw, dv, dw0 = ws.dw[idx], ws.dv[idx], ws.dw0[u]
        v = ws.bv[idx] + dv
        f, s = fm.forward(base.w0 + dw0, x, ws.bw[idx] + dw, v)
        p = fm.sigmoid(f)
        predictions[sel] = p
        g = p - y[sel]
        grad_w, grad_v = fm.data_gradients(g, x, v, s)
        ws.dw[idx] = dw - lr * (grad_w + l2 * dw)
        ws.dv[idx] = dv - lr * (grad_v + l2 * dv)
        ws.dw0[u] = dw0 - bias_lr * (g + l2 * dw0)
        # Padding slots wrote zeros over the padding row; it must stay all zero, and it does,
        # because their x is 0 and the padding row's delta starts at 0.
    ws.store(deltas)
    return predictions
