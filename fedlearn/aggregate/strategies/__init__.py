"""Aggregation rules, one per module behind :class:`Strategy`; shared math in ``ops``.

``make_strategy("trimmed_mean", beta=0.2)`` builds one by name (the name a setting holds).
"""

from __future__ import annotations

from typing import Any, Literal

from fedlearn.aggregate.strategies.base import (
    INTERCEPT,
    RowSums,
    RowUpdate,
    RowValues,
    Strategy,
)
from fedlearn.aggregate.strategies.fedavg import FedAvg
from fedlearn.aggregate.strategies.fedavgm import FedAvgM
from fedlearn.aggregate.strategies.median import Median
from fedlearn.aggregate.strategies.trimmed_mean import TrimmedMean

# The one list of rules: settings, the API and the config all read their names from here.
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedAvgM, TrimmedMean, Median)
}
# Their names as a type, for validating settings and requests (pydantic reads it at runtime).
StrategyName = Literal[tuple(STRATEGIES)]  # type: ignore[valid-type]


def make_strategy(name: str, **params: Any) -> Strategy:
    """The strategy called ``name`` with ``params`` (its keyword arguments)."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(
            f"unknown aggregation strategy {name!r}; choose one of {sorted(STRATEGIES)}"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"strategy {name!r}: {exc}") from None


__all__ = [
    "INTERCEPT",
    "STRATEGIES",
    "FedAvg",
    "FedAvgM",
    "Median",
    "RowSums",
    "RowUpdate",
    "RowValues",
    "Strategy",
    "StrategyName",
    "TrimmedMean",
    "make_strategy",
]
