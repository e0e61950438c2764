"""The numpy math the aggregation rules share: per-row means, medians and trimmed means over
ragged groups, and Gaussian noise. Vectorized over all rows at once (no Python loop per row),
since a round may touch hundreds of thousands of rows.
"""

from __future__ import annotations

import numpy as np

from fedlearn.aggregate.strategies.base import RowSums, RowUpdate, RowValues


def weighted_mean(rows: RowSums, *, noise_std: float = 0.0, rng: np.random.Generator) -> RowUpdate:
    """``sum(weight * change) / sum(weight)`` per row; with ``noise_std``, Gaussian noise of that
    standard deviation is added to every coordinate of the *sums* first (the DP-FedAvg order:
    clip, sum, noise, divide)."""
    w, v = rows.w, rows.v
    if noise_std > 0:
        w = w + rng.normal(0.0, noise_std, w.shape)
        v = v + rng.normal(0.0, noise_std, v.shape)
    weight = np.where(rows.weight > 0, rows.weight, 1.0)
    return RowUpdate(list(rows.names), w / weight, v / weight[:, None], rows.count.copy())


def _columns(rows: RowValues) -> np.ndarray:
    """The entries' values as one ``(E, 1 + k)`` block: ``w`` then ``v``."""
    return np.concatenate([rows.w[:, None], rows.v.reshape(len(rows.w), rows.n_factors)], axis=1)


def _split(rows: RowValues, out: np.ndarray, count: np.ndarray) -> RowUpdate:
    return RowUpdate(list(rows.names), out[:, 0].copy(), out[:, 1:].copy(), count)


def _sorted_groups(
    row: np.ndarray, column: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entries sorted by (row, value): the sorted values, their rows, each row's start and
    size."""
    order = np.lexsort((column, row))
    count = np.bincount(row, minlength=n_rows)
    start = np.cumsum(count) - count
    return column[order], row[order], start, count


def grouped_median(rows: RowValues) -> RowUpdate:
    """The coordinate-wise median of every row over the users who touched it (the mean of the
    two middle values for an even count)."""
    n = len(rows.names)
    values = _columns(rows)
    out = np.zeros((n, values.shape[1]))
    count = np.bincount(rows.row, minlength=n)
    has = count > 0
    for c in range(values.shape[1]):
        ordered, _, start, size = _sorted_groups(rows.row, values[:, c], n)
        lo = start[has] + (size[has] - 1) // 2
        hi = start[has] + size[has] // 2
        out[has, c] = 0.5 * (ordered[lo] + ordered[hi])
    return _split(rows, out, count)


def grouped_trimmed_mean(rows: RowValues, beta: float) -> RowUpdate:
    """The coordinate-wise mean of every row after dropping ``floor(beta * n)`` of the ``n``
    values at each end (a row touched by few users is trimmed less, or not at all)."""
    n = len(rows.names)
    values = _columns(rows)
    out = np.zeros((n, values.shape[1]))
    count = np.bincount(rows.row, minlength=n)
    trim = np.floor(beta * count).astype(np.int64)
    kept = count - 2 * trim
    for c in range(values.shape[1]):
        ordered, group, start, size = _sorted_groups(rows.row, values[:, c], n)
        position = np.arange(len(ordered)) - start[group]
        keep = (position >= trim[group]) & (position < size[group] - trim[group])
        total = np.bincount(group[keep], weights=ordered[keep], minlength=n)
        out[:, c] = total / np.where(kept > 0, kept, 1)
    return _split(rows, out, count)


def merge_state(state: RowUpdate | None, average: RowUpdate, decay: float) -> RowUpdate:
    """``decay * state + average`` over the union of their rows (FedAvgM's momentum buffer)."""
    k = average.v.shape[1] if average.v.ndim == 2 else 0
    if state is None or not state.names:
        return RowUpdate(list(average.names), average.w.copy(), average.v.copy(), average.count)
    index = {name: i for i, name in enumerate(state.names)}
    names = list(state.names)
    for name in average.names:
        if name not in index:
            index[name] = len(names)
            names.append(name)
    w = np.zeros(len(names))
    v = np.zeros((len(names), k or state.v.shape[1]))
    w[: len(state.names)] = decay * state.w
    v[: len(state.names)] = decay * state.v
    rows = np.fromiter((index[n] for n in average.names), np.int64, len(average.names))
    w[rows] += average.w
    v[rows] += average.v
    count = np.zeros(len(names), dtype=np.int64)
    count[rows] = average.count
    return RowUpdate(names, w, v, count)
