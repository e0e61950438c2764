"""Weighted FedAvg, optionally with Gaussian noise on the clipped sums (user-level DP-FedAvg)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fedlearn.aggregate.strategies.base import RowSums, RowUpdate, Strategy
from fedlearn.aggregate.strategies.ops import weighted_mean


def check_noise(noise_multiplier: float) -> float:
    noise_multiplier = float(noise_multiplier)
    if not noise_multiplier >= 0 or not np.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}")
    return noise_multiplier


def noise_std(noise_multiplier: float, rows: RowSums) -> float:
    """The std of the noise on each summed coordinate: ``noise_multiplier`` times the most one
    user can move a sum (clip norm times the largest weight a user may carry)."""
    if noise_multiplier == 0:
        return 0.0
    if rows.clip_norm is None:
        raise ValueError(
            f"noise_multiplier={noise_multiplier} needs clipping: set clip_norm > 0, or the "
            f"noise is calibrated to nothing"
        )
    return noise_multiplier * rows.clip_norm * rows.max_weight


class FedAvg(Strategy):
    """Each row moves by the mean of its users' changes, weighted by their (capped) events.

    With ``noise_multiplier`` > 0, Gaussian noise of std ``noise_multiplier * clip_norm *
    max_weight`` is added to each summed coordinate before dividing (clip, sum, noise, divide).
    """

    name: ClassVar[str] = "fedavg"
    supports_noise: ClassVar[bool] = True

    def __init__(self, *, noise_multiplier: float = 0.0) -> None:
        self.noise_multiplier = check_noise(noise_multiplier)

    def aggregate(self, rows: RowSums, rng: np.random.Generator) -> RowUpdate:
        return weighted_mean(rows, noise_std=noise_std(self.noise_multiplier, rows), rng=rng)
