"""What every aggregation rule receives and returns, and the one interface they share.

A round hands a rule the users' clipped changes *row by row*: a row is a feature of the model
(``item=42``), or the intercept (:data:`INTERCEPT`). A user contributes to a row only if the
user's change of that row is not zero, so a rare item's row is averaged over the few users who
touched it instead of being diluted by everyone else. Rules that only need weighted sums get
:class:`RowSums` (cheap: the map step sums per shard); rules that need every user's value
(median, trimmed mean) declare ``needs_values = True`` and get :class:`RowValues`.

A rule returns a :class:`RowUpdate`, the change to add to the base, one row per row it got.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

# The row of the intercept's change. Feature names never contain control characters
# (CONTRACTS.md), so this name cannot collide with a feature.
INTERCEPT = "\x00w0"


@dataclass
class RowSums:
    """Per row: the weighted sum of the users' changes, the sum of their weights and how many
    users touched it. ``max_weight`` and ``clip_norm`` bound one user's part of a sum (what
    calibrated noise needs)."""

    names: list[str]
    w: np.ndarray  # (R,)  sum of weight * change of w
    v: np.ndarray  # (R, k)
    weight: np.ndarray  # (R,)
    count: np.ndarray  # (R,) users
    max_weight: float = 1.0
    clip_norm: float | None = None

    @property
    def n_factors(self) -> int:
        return int(self.v.shape[1])


@dataclass
class RowValues:
    """Every user's change of every row it touched: entry ``e`` is row ``row[e]``."""

    names: list[str]
    row: np.ndarray  # (E,) int64 into names
    w: np.ndarray  # (E,)
    v: np.ndarray  # (E, k)
    weight: np.ndarray  # (E,) the contributing user's weight
    max_weight: float = 1.0
    clip_norm: float | None = None

    @property
    def n_factors(self) -> int:
        return int(self.v.shape[1])

    def sums(self) -> RowSums:
        """The same contributions, summed per row (weighted)."""
        n = len(self.names)
        w = np.bincount(self.row, weights=self.weight * self.w, minlength=n)
        v = np.stack(
            [
                np.bincount(self.row, weights=self.weight * self.v[:, f], minlength=n)
                for f in range(self.n_factors)
            ],
            axis=1,
        ).reshape(n, self.n_factors)
        return RowSums(
            list(self.names),
            w,
            v,
            np.bincount(self.row, weights=self.weight, minlength=n),
            np.bincount(self.row, minlength=n),
            self.max_weight,
            self.clip_norm,
        )


@dataclass
class RowUpdate:
    """A change per row: what a rule wants added to the base (or carries between rounds)."""

    names: list[str]
    w: np.ndarray  # (R,)
    v: np.ndarray  # (R, k)
    count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if len(self.count) != len(self.names):
            self.count = np.zeros(len(self.names), dtype=np.int64)

    @classmethod
    def empty(cls, n_factors: int) -> RowUpdate:
        return cls([], np.zeros(0), np.zeros((0, n_factors)))

    @classmethod
    def concat(cls, parts: list[RowUpdate], n_factors: int) -> RowUpdate:
        """Row-disjoint parts (the buckets of a round) as one update."""
        if not parts:
            return cls.empty(n_factors)
        return cls(
            [name for part in parts for name in part.names],
            np.concatenate([p.w for p in parts]),
            np.concatenate([p.v.reshape(-1, n_factors) for p in parts]),
            np.concatenate([p.count for p in parts]),
        )


class Strategy(ABC):
    """One aggregation rule. Hyperparameters are exactly the keyword arguments of ``__init__``,
    stored under their own names; learned state (momentum) is passed in and out of
    :meth:`step`, never kept on the object, so one instance serves any number of rounds.
    """

    name: ClassVar[str]
    needs_values: ClassVar[bool] = False  # True: gets RowValues, else RowSums
    supports_noise: ClassVar[bool] = False
    # parameter -> the ``AggregationConfig`` field that holds it, where the names differ
    config_names: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """The rule's hyperparameters and their defaults: its keyword-only ``__init__``
        arguments, so a parameter is declared once, in the signature."""
        signature = inspect.signature(cls.__init__)
        return {
            p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY
        }

    @abstractmethod
    def aggregate(self, rows: Any, rng: np.random.Generator) -> RowUpdate:
        """The aggregated change of every row given (``RowSums`` or ``RowValues``, see
        ``needs_values``). Rows are independent: a round may call this once per bucket."""

    def step(
        self, average: RowUpdate, state: RowUpdate | None
    ) -> tuple[RowUpdate, RowUpdate | None]:
        """The change to apply to the base, and the state for the next round (none here)."""
        return average, None

    @property
    def gain(self) -> float:
        """How much of the round's average the step applies (FedAvgM: its server rate);
        a user's share of the step scales by it (``aggregate.rebase``)."""
        return 1.0

    def kept_range(self, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rank rules: the first and last sorted position (per row of ``count`` values)
        whose values the average keeps; what a user's share of the step depends on."""
        raise NotImplementedError(f"{self.name} averages by weight, not by rank")

    @property
    def stateful(self) -> bool:
        return type(self).step is not Strategy.step

    def params(self) -> dict[str, Any]:
        """The hyperparameters, for the published version's meta."""
        return {k.lstrip("_"): v for k, v in vars(self).items() if isinstance(v, int | float | str)}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
