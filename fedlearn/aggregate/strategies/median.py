"""Coordinate-wise median (Yin et al. 2018): the most robust, and the noisiest, of the rules."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fedlearn.aggregate.strategies.base import RowUpdate, RowValues, Strategy
from fedlearn.aggregate.strategies.ops import grouped_median


class Median(Strategy):
    """Per row and coordinate, the median of the values of the users who touched the row
    (unweighted). A row moves only where most of its users agree."""

    name: ClassVar[str] = "median"
    needs_values: ClassVar[bool] = True

    def kept_range(self, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (count - 1) // 2, count // 2  # the middle value, or the two middle ones

    def aggregate(self, rows: RowValues, rng: np.random.Generator) -> RowUpdate:
        return grouped_median(rows)
