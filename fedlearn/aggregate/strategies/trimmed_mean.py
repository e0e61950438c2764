"""Coordinate-wise trimmed mean (Yin et al. 2018): robust to a minority of extreme users."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from fedlearn.aggregate.strategies.base import RowUpdate, RowValues, Strategy
from fedlearn.aggregate.strategies.ops import grouped_trimmed_mean


class TrimmedMean(Strategy):
    """Per row and coordinate, drop the ``beta`` fraction of largest and of smallest values
    among the users who touched the row, and average the rest (unweighted: a user is one vote,
    so sending more events buys no more influence).
    """

    name: ClassVar[str] = "trimmed_mean"
    needs_values: ClassVar[bool] = True
    config_names: ClassVar[Mapping[str, str]] = {"beta": "trim_beta"}

    def __init__(self, *, beta: float = 0.1) -> None:
        if not 0 <= beta < 0.5:
            raise ValueError(f"beta (trim fraction per side) must be in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def kept_range(self, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        trim = np.floor(self.beta * count).astype(np.int64)
        return trim, count - trim - 1

    def aggregate(self, rows: RowValues, rng: np.random.Generator) -> RowUpdate:
        return grouped_trimmed_mean(rows, self.beta)
