"""Rebase after promotion: take out of a user's delta what the round folded in for that user.

A clone is the base plus the user's delta. When a round folds the user's change into a new
base, serving that base plus the unchanged delta would count the change twice. So each
participant's delta (and its snapshot) is *rebased*: the user's **share** of the round's step
is subtracted, and rows left at zero (within ``model.delta.REBASE_TOLERANCE``) are dropped.

The share is defined by the fold itself (``fold.fold_rows``): every rule's average of a row
is a combination of the users' clipped changes, ``sum_u a_u * c_u`` (plus noise), and the
step the base takes is ``gain`` times that average. A user's share of a row is
``gain * a_u * c_u``, the part of the step that came from that user's change:

- fedavg / fedavgm: ``a_u = weight_u / sum of the row's weights`` (capped events), per row;
  ``gain`` is fedavgm's ``server_lr`` (1 otherwise). The replay's naive ``"mean"`` rule
  divides by the round's whole weight instead.
- median / trimmed_mean (unweighted, per coordinate): ``a_u = 1 / kept`` when the user's
  value is among the kept middle values of the row's sorted values, 0 when it was trimmed;
  a value tied with others at the edge of the kept range gets its fair fraction of the kept
  places, so the shares of a row always add up to its step.
- Not anyone's share: the noise, FedAvgM's momentum carried from earlier rounds (its echo of
  this round in later rounds is shared drift, not subtracted), withheld rows (users' own
  ``user=<id>`` rows and rows under ``min_row_users``: not folded, the user keeps them), and
  rejected users.

So a user alone in changing a row gets the whole step of that row back out of the delta: the
clone after the round and the rebase equals the clone before it on that row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fedlearn.aggregate.changes import Changes
from fedlearn.aggregate.partials import _names_blob, _names_of, _pack, _unpack
from fedlearn.aggregate.strategies import INTERCEPT, RowSums, RowValues, Strategy
from fedlearn.model import Delta
from fedlearn.model.delta import rebase


@dataclass
class ShareTable:
    """Per row the round stepped, how a contributor's change maps to its share of the step.

    Weighted rules fill ``scale`` (share = ``scale * weight_u * c_u``); rank rules fill the
    kept range per coordinate (``lo``/``hi`` values, the fraction of the values tied at each
    edge that were kept, and ``kept`` places per row). ``gain`` multiplies every share.
    """

    names: list[str]
    gain: float
    scale: np.ndarray | None = None  # (R,)
    lo: np.ndarray | None = None  # (R, 1 + k)
    hi: np.ndarray | None = None
    frac_lo: np.ndarray | None = None
    frac_hi: np.ndarray | None = None
    kept: np.ndarray | None = None  # (R,)

    @property
    def weighted(self) -> bool:
        return self.scale is not None

    @cached_property
    def position(self) -> dict[str, int]:
        """Each row's position by name, built once per table: the promotion asks for every
        chunk of users, and rebuilding it each time made its cost grow with the rows a round
        stepped (docs/SCALE.md)."""
        return {name: i for i, name in enumerate(self.names)}

    _ARRAYS = ("scale", "lo", "hi", "frac_lo", "frac_hi", "kept")

    def to_bytes(self) -> bytes:
        """``.npz`` bytes (no pickle), what a round stores for its promotion."""
        arrays = {a: getattr(self, a) for a in self._ARRAYS if getattr(self, a) is not None}
        return _pack(names=_names_blob(self.names), gain=np.array([self.gain]), **arrays)

    @classmethod
    def from_bytes(cls, blob: bytes) -> ShareTable:
        data = _unpack(blob)
        return cls(
            _names_of(data["names"]), float(data["gain"][0]),
            **{a: data[a] for a in cls._ARRAYS if a in data},
        )  # fmt: skip

    def select(self, names: list[str]) -> ShareTable:
        """The rows of ``names`` that this table has (the rows the step actually moved)."""
        index = {n: i for i, n in enumerate(self.names)}
        rows = np.fromiter((index[n] for n in names if n in index), np.int64)
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return ShareTable(
            [self.names[i] for i in rows], self.gain, pick(self.scale), pick(self.lo),
            pick(self.hi), pick(self.frac_lo), pick(self.frac_hi), pick(self.kept),
        )  # fmt: skip

    @classmethod
    def concat(cls, parts: list[ShareTable], gain: float) -> ShareTable:
        """Row-disjoint parts (the buckets of a round) as one table."""
        names = [n for p in parts for n in p.names]
        if not parts:
            return cls(names, gain, scale=np.zeros(0))

        def join(attr: str) -> np.ndarray | None:
            arrays = [getattr(p, attr) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays)

        return cls(
            names, gain, join("scale"), join("lo"), join("hi"), join("frac_lo"),
            join("frac_hi"), join("kept"),
        )  # fmt: skip


def share_table(
    rows: RowSums | RowValues, strategy: Strategy, total_weight: float | None = None
) -> ShareTable:
    """How the shares of one bucket of rows follow from ``strategy``'s average of it."""
    gain = strategy.gain
    if not strategy.needs_values:
        weight = _row_weights(rows) if not total_weight else np.full(len(rows.names), total_weight)
        return ShareTable(list(rows.names), gain, scale=1.0 / np.where(weight > 0, weight, 1.0))
    assert isinstance(rows, RowValues)
    n = len(rows.names)
    values = np.concatenate(
        [rows.w[:, None], rows.v.reshape(len(rows.w), rows.n_factors)], axis=1
    ).astype(np.float32)
    count = np.bincount(rows.row, minlength=n)
    first, last = strategy.kept_range(count)
    shape = (n, values.shape[1])
    lo, hi, frac_lo, frac_hi = (np.zeros(shape) for _ in range(4))
    has = count > 0
    start = np.cumsum(count) - count
    for c in range(values.shape[1]):
        order = np.lexsort((values[:, c], rows.row))
        ordered, group = values[order, c], rows.row[order]
        position = np.arange(len(ordered)) - start[group]
        lo[has, c] = ordered[(start + first)[has]]
        hi[has, c] = ordered[(start + last)[has]]
        kept = (position >= first[group]) & (position <= last[group])
        for edge, frac in ((lo, frac_lo), (hi, frac_hi)):
            tied = ordered == edge[group, c]
            total = np.bincount(group[tied], minlength=n)
            inside = np.bincount(group[tied & kept], minlength=n)
            frac[:, c] = inside / np.where(total > 0, total, 1)
    return ShareTable(
        list(rows.names), gain, lo=lo, hi=hi, frac_lo=frac_lo, frac_hi=frac_hi,
        kept=np.maximum(last - first + 1, 1),
    )  # fmt: skip


def _row_weights(rows: RowSums | RowValues) -> np.ndarray:
    return rows.weight if isinstance(rows, RowSums) else rows.sums().weight


def user_shares(changes: Changes, table_names: list[str], shares: ShareTable) -> dict[int, Delta]:
    """Each contributor's share of the step, as a delta (key: position in the caller's list,
    as ``changes.index``). ``table_names`` numbers ``changes.row``."""
    k = changes.v.shape[1] if changes.v.ndim == 2 else 0
    where = shares.position
    target = np.fromiter((where.get(table_names[r], -1) for r in changes.row), np.int64)
    mine = target >= 0
    t = target[mine]
    values = np.concatenate([changes.w[mine, None], changes.v[mine].reshape(-1, k)], axis=1)
    if shares.weighted:
        weight = changes.weight[changes.user[mine]]
        share = values * (shares.scale[t] * weight)[:, None]  # type: ignore[index]
    else:
        x = values.astype(np.float32).astype(np.float64)
        lo, hi = shares.lo[t], shares.hi[t]  # type: ignore[index]
        a = np.where((x > lo) & (x < hi), 1.0, 0.0)
        a = np.where(x == hi, shares.frac_hi[t], a)  # type: ignore[index]
        a = np.where(x == lo, shares.frac_lo[t], a)  # type: ignore[index]
        share = x * a / shares.kept[t][:, None]  # type: ignore[index]
    share *= shares.gain
    out: dict[int, Delta] = {}
    users = changes.user[mine]
    names = [table_names[r] for r in changes.row[mine]]
    # Each user's entries in their order (a stable sort, then one slice per user), not a scan
    # of the whole chunk per user.
    if not len(users):
        return out
    order = np.argsort(users, kind="stable")
    present, starts = np.unique(users[order], return_index=True)
    for u, pick in zip(present, np.split(order, starts[1:]), strict=True):
        rows = [i for i in pick if names[i] != INTERCEPT]
        w0 = float(share[[i for i in pick if names[i] == INTERCEPT], 0].sum())
        out[int(changes.index[u])] = Delta.from_rows(
            k, [names[i] for i in rows], share[rows, 0], share[rows, 1:], w0
        )
    return out


def is_empty(share: Delta) -> bool:
    return not len(share) and share.w0 == 0.0


__all__ = ["ShareTable", "is_empty", "rebase", "share_table", "user_shares"]
