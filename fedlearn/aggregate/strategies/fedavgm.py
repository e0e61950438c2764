"""FedAvg with a server learning rate and server momentum (FedAvgM, Hsu et al. 2019)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fedlearn.aggregate.strategies.base import RowSums, RowUpdate, Strategy
from fedlearn.aggregate.strategies.fedavg import check_noise, noise_std
from fedlearn.aggregate.strategies.ops import merge_state, weighted_mean

# Momentum rows whose every coordinate decayed below this are dropped from the buffer.
NEGLIGIBLE = 1e-9


class FedAvgM(Strategy):
    """The weighted mean change ``d`` feeds a momentum buffer ``m = momentum * m + d``; the base
    moves by ``server_lr * m``. Rows keep drifting on their momentum for a few rounds after
    their users stopped, which smooths small, noisy rounds.
    """

    name: ClassVar[str] = "fedavgm"
    supports_noise: ClassVar[bool] = True

    def __init__(
        self, *, server_lr: float = 1.0, momentum: float = 0.9, noise_multiplier: float = 0.0
    ) -> None:
        if not server_lr > 0 or not np.isfinite(server_lr):
            raise ValueError(f"server_lr must be a finite number > 0, got {server_lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.server_lr = float(server_lr)
        self.momentum = float(momentum)
        self.noise_multiplier = check_noise(noise_multiplier)

    @property
    def gain(self) -> float:
        return self.server_lr

    def aggregate(self, rows: RowSums, rng: np.random.Generator) -> RowUpdate:
        return weighted_mean(rows, noise_std=noise_std(self.noise_multiplier, rows), rng=rng)

    def step(
        self, average: RowUpdate, state: RowUpdate | None
    ) -> tuple[RowUpdate, RowUpdate | None]:
        buffer = merge_state(state, average, self.momentum)
        alive = (np.abs(buffer.w) > NEGLIGIBLE) | (np.abs(buffer.v) > NEGLIGIBLE).any(axis=1)
        buffer = RowUpdate(
            [n for n, keep in zip(buffer.names, alive, strict=True) if keep],
            buffer.w[alive],
            buffer.v[alive],
            buffer.count[alive],
        )
        applied = RowUpdate(
            list(buffer.names), self.server_lr * buffer.w, self.server_lr * buffer.v, buffer.count
        )
        return applied, buffer
