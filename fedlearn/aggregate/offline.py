"""A whole round in memory, on deltas held by the caller: the same math as the service's
rounds (changes since a snapshot, clipping, capped weights, the strategy, rows withheld below
``min_row_users``, FedAvgM's state), without Redis or Celery. For offline replay and
experiments: ``fedlearn.evaluate``'s aggregated arm can call :func:`aggregate_deltas` with each
user's delta before and after a block of events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fedlearn.aggregate.changes import apply_update, norm_summary, user_changes
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.partials import PartialBuilder
from fedlearn.aggregate.strategies import INTERCEPT, RowUpdate
from fedlearn.model import Base, Delta


def aggregate_deltas(
    base: Base,
    pairs: Iterable[tuple[Delta, Delta | None, int]],
    config: AggregationConfig,
    *,
    version: str,
    state: RowUpdate | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[Base | None, RowUpdate | None, dict[str, Any]]:
    """Fold users' changes into ``base``: ``pairs`` are (delta now, delta at the user's last
    contribution or None, events since). Returns the new base (``None`` when fewer than
    ``min_users`` changed anything), the strategy's state for the next round, and a summary.
    """
    strategy = config.make_strategy()
    k = base.n_factors
    builder = PartialBuilder(k, needs_values=strategy.needs_values)
    pairs = list(pairs)
    if pairs:
        builder.add(
            user_changes(pairs, k, builder.table, clip_norm=config.clip_norm,
                         max_weight=config.max_weight, max_norm=config.max_user_norm)
        )  # fmt: skip
    summary: dict[str, Any] = {"users": builder.users, "events": builder.events}
    if builder.users < config.min_users:
        return None, state, {**summary, "status": "skipped"}
    rows = builder.rows(max_weight=float(config.max_weight), clip_norm=config.clip_norm)
    average = strategy.aggregate(rows, rng if rng is not None else np.random.default_rng())
    keep = (average.count >= config.min_row_users) | np.array(
        [n == INTERCEPT for n in average.names], dtype=bool
    )
    average = RowUpdate(
        [n for n, ok in zip(average.names, keep, strict=True) if ok],
        average.w[keep], average.v[keep], average.count[keep],
    )  # fmt: skip
    applied, state = strategy.step(average, state)
    summary.update(
        status="published", rows_updated=len(applied.names), rows_withheld=int((~keep).sum()),
        **norm_summary(builder.norms, config.clip_norm),
    )  # fmt: skip
    new = apply_update(base, applied, version=version, meta={**base.meta, "round": summary})
    return new, state, summary
