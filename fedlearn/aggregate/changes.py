"""The math of a round, pure numpy (no Redis, no Celery): users' clipped, weighted changes,
and a rule's update applied to the base (partial results per shard: ``partials``).

Map: a user's change is its current delta minus its snapshot (the delta it had when it last
contributed), row by row over the union of their rows, plus the change of its intercept. Only
rows whose change is not zero count as touched. The whole change (intercept, weights and
latents together) is scaled down to ``clip_norm`` in L2 norm (a change that is non-finite or
beyond ``max_norm`` is rejected instead, see ``checks``), and the user's weight is its
events since the snapshot, capped at ``max_weight``. A shard's partial result is split into
``buckets`` by a hash of the row name, so the reducer can aggregate one bucket of rows at a
time: every shard's bucket ``b`` holds the same rows' contributions.

Reduce: the buckets of all shards are merged row by row into ``RowSums`` (or ``RowValues``
for rules that need every value) and handed to the strategy; the update it returns is added
to the base, rows the base lacks (new items, new context values) becoming new rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlearn.aggregate.checks import norm_problems
from fedlearn.aggregate.strategies import INTERCEPT, RowUpdate
from fedlearn.model import Base, Delta
from fedlearn.model.block import RowTable

UserPair = tuple[Delta, Delta | None, int]  # (current delta, snapshot delta or None, events)


@dataclass
class Changes:
    """The clipped changes of the users of one chunk who changed anything.

    Entry ``e`` is user ``user[e]``'s change of row ``row[e]`` (a row of the caller's table).
    ``norm`` is each user's norm *before* clipping; ``weight`` its capped events. Users
    whose change is non-finite or larger than ``max_norm`` are not among them: ``rejected``.
    """

    user: np.ndarray
    row: np.ndarray
    w: np.ndarray
    v: np.ndarray
    weight: np.ndarray
    events: np.ndarray
    norm: np.ndarray
    index: np.ndarray  # position of each kept user in the caller's list
    rejected: dict[int, str]  # position in the caller's list -> reason (``checks.REASONS``)

    @property
    def n_users(self) -> int:
        return len(self.weight)


def _stack(deltas: Sequence[Delta], k: int, table: RowTable) -> tuple[np.ndarray, ...]:
    lengths = np.fromiter((len(d) for d in deltas), np.int64, len(deltas))
    user = np.repeat(np.arange(len(deltas)), lengths)
    rows = np.fromiter(
        (table.row_of(name) for d in deltas for name in d.names), np.int64, int(lengths.sum())
    )
    if len(rows):
        w = np.concatenate([d.w for d in deltas]).astype(np.float64)
        v = np.concatenate([d.v.reshape(-1, k) for d in deltas]).astype(np.float64)
    else:
        w, v = np.zeros(0), np.zeros((0, k))
    return user, rows, w, v


def user_changes(
    pairs: Sequence[UserPair],
    n_factors: int,
    table: RowTable,
    *,
    clip_norm: float | None,
    max_weight: int,
    max_norm: float = np.inf,
) -> Changes:
    """The clipped changes of ``pairs`` (current delta, snapshot or None, events since).

    Rows are numbered in ``table`` (shared across chunks so one shard has one numbering).
    Vectorized: the rows of all users are stacked, the snapshot's with a minus sign, and
    summed per (user, row).
    """
    k = n_factors
    n = len(pairs)
    new = [p[0] for p in pairs]
    old = [p[1] if p[1] is not None else Delta(k) for p in pairs]
    nu, nr, nw, nv = _stack(new, k, table)
    ou, orow, ow, ov = _stack(old, k, table)
    intercept = table.row_of(INTERCEPT)
    iu = np.arange(n)
    iw = np.fromiter((a.w0 - b.w0 for a, b in zip(new, old, strict=True)), np.float64, n)
    user = np.concatenate([nu, ou, iu])
    row = np.concatenate([nr, orow, np.full(n, intercept)])
    w = np.concatenate([nw, -ow, iw])
    v = np.concatenate([nv, -ov, np.zeros((n, k))])
    n_rows = len(table.names)
    keys, inverse = np.unique(user * n_rows + row, return_inverse=True)
    sw = np.bincount(inverse, weights=w, minlength=len(keys))
    sv = np.zeros((len(keys), k))
    for f in range(k):
        sv[:, f] = np.bincount(inverse, weights=v[:, f], minlength=len(keys))
    moved = (sw != 0) | (sv != 0).any(axis=1)
    keys, sw, sv = keys[moved], sw[moved], sv[moved]
    e_user, e_row = keys // n_rows, keys % n_rows
    sq = np.bincount(e_user, weights=sw * sw + (sv * sv).sum(axis=1), minlength=n)
    norm = np.sqrt(sq)
    # Judged before clipping: clipping a NaN or infinite change would pass NaN on.
    problem = norm_problems(norm, max_norm=max_norm)
    rejected = np.flatnonzero(problem != "")
    active = np.flatnonzero((np.bincount(e_user, minlength=n) > 0) & (problem == ""))
    scale = np.ones(n)
    if clip_norm is not None:
        big = norm > clip_norm
        scale[big] = clip_norm / norm[big]
    events = np.fromiter((max(int(p[2]), 1) for p in pairs), np.int64, n)
    weight = np.minimum(events, max_weight).astype(np.float64)
    compact = np.full(n, -1, dtype=np.int64)
    compact[active] = np.arange(len(active))
    keep = compact[e_user] >= 0
    e_user, e_row, sw, sv = e_user[keep], e_row[keep], sw[keep], sv[keep]
    return Changes(
        user=compact[e_user],
        row=e_row,
        w=sw * scale[e_user],
        v=sv * scale[e_user][:, None],
        weight=weight[active],
        events=events[active],
        norm=norm[active],
        index=active,
        rejected={int(i): str(problem[i]) for i in rejected},
    )


# -- the update, as a base and as stored state -----------------------------------------------


def apply_update(base: Base, update: RowUpdate, *, version: str, meta: dict[str, Any]) -> Base:
    """A new base: ``base`` plus ``update`` row by row; rows it lacks are appended, starting
    from the values a clone sees for an unseen feature (weight 0, the deterministic latent)."""
    k = base.n_factors
    d_w0 = 0.0
    names, rows = [], []
    for i, name in enumerate(update.names):
        if name == INTERCEPT:
            d_w0 += float(update.w[i])
        else:
            names.append(name)
            rows.append(i)
    new = [n for n in dict.fromkeys(names) if n not in base.index]
    features = base.features + new
    new_w, new_v = base.rows(new)
    w = np.concatenate([base.w.astype(np.float64), new_w])
    v = np.concatenate([base.v.astype(np.float64).reshape(-1, k), new_v.reshape(-1, k)])
    index = {**base.index, **{n: base.n_features + i for i, n in enumerate(new)}}
    target = np.fromiter((index[n] for n in names), np.int64, len(names))
    sel = np.asarray(rows, dtype=np.int64)
    np.add.at(w, target, update.w[sel])
    np.add.at(v, target, update.v[sel].reshape(-1, k))
    return Base(
        features,
        base.w0 + d_w0,
        w,
        v,
        version=version,
        init_seed=base.init_seed,
        init_scale=base.init_scale,
        hyper=base.hyper,
        meta=meta,
    )


def norm_summary(norms: np.ndarray, clip_norm: float | None) -> dict[str, float | int]:
    """How big the users' changes were before clipping, and how many were clipped."""
    if not len(norms):
        return {"clipped_users": 0}
    return {
        "norm_mean": float(norms.mean()),
        "norm_median": float(np.median(norms)),
        "norm_p95": float(np.quantile(norms, 0.95)),
        "norm_max": float(norms.max()),
        "clipped_users": int((norms > clip_norm).sum()) if clip_norm is not None else 0,
    }


_INTEGER = re.compile(r"[0-9]{1,18}")


def next_version(existing: Iterable[str]) -> str:
    """One more than the largest integer version id among ``existing`` (``"1"`` if none).

    Never reuses an id: a version whose publish crashed before it became current is skipped.
    """
    top = max((int(v) for v in existing if _INTEGER.fullmatch(v)), default=0)
    return str(top + 1)
