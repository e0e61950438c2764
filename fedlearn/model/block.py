"""Padded blocks: many feature dicts as index and value matrices over a set of rows.

The vectorized paths (ranking, batched clone updates, batch training) all turn a list of feature
dicts into ``idx (E, F)`` and ``x (E, F)``: row numbers into a parameter table and the feature
values. Padding slots point at row ``-1`` with ``x = 0``: every table these blocks index keeps
one extra all-zero row at its end for them, so a padded slot reads zeros and adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

PAD = -1


def pad_rows(
    rows_per_sample: Sequence[Sequence[int]], values_per_sample: Sequence[Sequence[float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged per-sample rows and values into ``(E, F)`` matrices padded with ``PAD``."""
    lengths = np.fromiter((len(r) for r in rows_per_sample), np.int64, len(rows_per_sample))
    n, width = len(lengths), int(lengths.max(initial=1))
    idx = np.full((n, width), PAD, dtype=np.int64)
    x = np.zeros((n, width))
    total = int(lengths.sum())
    if total:
        sample = np.repeat(np.arange(n), lengths)
        starts = np.cumsum(lengths) - lengths
        col = np.arange(total) - np.repeat(starts, lengths)
        idx[sample, col] = np.fromiter(
            (r for rows in rows_per_sample for r in rows), np.int64, total
        )
        x[sample, col] = np.fromiter(
            (val for vals in values_per_sample for val in vals), np.float64, total
        )
    return idx, x


def encode(
    samples: Sequence[Mapping[str, float]], row_of: Callable[[str], int]
) -> tuple[np.ndarray, np.ndarray]:
    """``idx, x`` for ``samples`` where ``row_of`` maps a feature name to its row."""
    rows = [[row_of(name) for name in sample] for sample in samples]
    values = [list(sample.values()) for sample in samples]
    return pad_rows(rows, values)


class RowTable:
    """Assigns consecutive rows to names on first sight."""

    __slots__ = ("index", "names")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}

    def row_of(self, name: str) -> int:
        row = self.index.get(name)
        if row is None:
            row = self.index[name] = len(self.names)
            self.names.append(name)
        return row
