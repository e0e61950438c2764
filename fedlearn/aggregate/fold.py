"""The one fold of users' changes into the base, on top of the strategies; pure numpy.

A fold takes the users' clipped, weighted changes row by row (``RowSums`` or ``RowValues``,
one bucket of rows at a time), lets the strategy average each bucket, withholds the private
rows, and lets the strategy turn the average into the step to apply (FedAvgM's momentum).
Private are, always, the users' own rows (named ``user=<id>``: the base is served to everyone,
and folding one would publish that user's own parameters; a rule, not a setting), and the rows
fewer than ``min_row_users`` users changed (1 by default: a film one user rated is folded, as
one global model would learn it at once; clipping and the round's checks bound what one user
can move).

Two callers, one rule: the service's round (``run.reduce_round``) feeds it the buckets it
merged from the shards' partials; :func:`fold_pairs` builds the rows in memory from
(delta now, delta before, events) pairs, for offline replay and experiments
(``fedlearn.evaluate``'s aggregated arms).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlearn.aggregate.changes import UserPair, apply_update, norm_summary, user_changes
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.partials import PartialBuilder
from fedlearn.aggregate.rebase import ShareTable, rebase, share_table, user_shares
from fedlearn.aggregate.round import RoundStatus
from fedlearn.aggregate.strategies import INTERCEPT, RowSums, RowUpdate, RowValues, Strategy
from fedlearn.model import Base, Delta
from fedlearn.model.features import USER_PREFIX


@dataclass(frozen=True)
class Folded:
    """What a fold decided: the step to add to the base, the strategy's state for the next
    round (``None`` for stateless rules), how many rows were withheld as private, and how a
    contributor's change maps to its share of the step (``rebase``; only rows of the step)."""

    step: RowUpdate
    state: RowUpdate | None
    rows_withheld: int
    shares: ShareTable


def _row_weights(rows: RowSums | RowValues) -> np.ndarray:
    return rows.weight if isinstance(rows, RowSums) else rows.sums().weight


def fold_rows(
    buckets: Iterable[RowSums | RowValues],
    n_factors: int,
    strategy: Strategy,
    *,
    min_row_users: int,
    state: RowUpdate | None,
    rng: np.random.Generator,
    total_weight: float | None = None,
) -> Folded:
    """Average every bucket with ``strategy``, withhold the private rows, take the step.

    ``total_weight`` (the replay's naive ``"mean"`` rule only; the service never sets it)
    scales each row's average by its users' share of all the round's weight, as if every
    participant had changed every row, untouched rows counting as no change.
    Users' own rows (``USER_PREFIX``) are withheld whatever their users' count.
    """
    parts, tables = [], []
    for rows in buckets:
        tables.append(share_table(rows, strategy, total_weight))
        part = strategy.aggregate(rows, rng)
        if total_weight:
            share = _row_weights(rows) / total_weight
            part = RowUpdate(part.names, part.w * share, part.v * share[:, None], part.count)
        parts.append(part)
    average = RowUpdate.concat(parts, n_factors)
    private = (average.count < min_row_users) & np.array(
        [n != INTERCEPT for n in average.names], dtype=bool
    )
    private |= np.array([n.startswith(USER_PREFIX) for n in average.names], dtype=bool)
    average = RowUpdate(
        [n for n, hide in zip(average.names, private, strict=True) if not hide],
        average.w[~private], average.v[~private], average.count[~private],
    )  # fmt: skip
    step, state = strategy.step(average, state)
    shares = ShareTable.concat(tables, strategy.gain).select(step.names)
    return Folded(step, state, int(private.sum()), shares)


@dataclass(frozen=True)
class PairsRound:
    """A round in memory: the new base (``None`` when skipped), the strategy's next state, the
    summary, and each contributor's share of the step (key: position in ``pairs``)."""

    base: Base | None
    state: RowUpdate | None
    summary: dict[str, Any]
    shares: dict[int, Delta]


def fold_pairs(
    base: Base, pairs: Iterable[UserPair], config: AggregationConfig, **options: Any
) -> tuple[Base | None, RowUpdate | None, dict[str, Any]]:
    """:func:`fold_pairs_round` (same arguments) without the users' shares: the new base
    (``None`` when skipped), the strategy's next state and the summary."""
    done = fold_pairs_round(base, pairs, config, **options)
    return done.base, done.state, done.summary


def fold_pairs_round(
    base: Base,
    pairs: Iterable[UserPair],
    config: AggregationConfig,
    *,
    version: str,
    state: RowUpdate | None = None,
    rng: np.random.Generator | None = None,
    per_row: bool = True,
) -> PairsRound:
    """A whole round in memory: ``pairs`` are (delta now, delta at the user's last
    contribution or None, events since). The new base is ``None`` when fewer than
    ``min_users`` changed anything; each contributor's share of the step is what a rebase
    takes out of its delta (``rebase``).
    ``per_row=False`` is the replay's naive rule (see :func:`fold_rows`' ``total_weight``).
    """
    strategy = config.make_strategy()
    k = base.n_factors
    builder = PartialBuilder(k, needs_values=strategy.needs_values)
    pairs = list(pairs)
    changes = None
    if pairs:
        changes = user_changes(
            pairs, k, builder.table, clip_norm=config.clip_norm, max_weight=config.max_weight,
            max_norm=config.max_user_norm,
        )  # fmt: skip
        builder.add(changes)
    summary: dict[str, Any] = {"users": builder.users, "events": builder.events}
    if builder.users < config.min_users or changes is None:
        return PairsRound(None, state, {**summary, "status": RoundStatus.SKIPPED}, {})
    rows = builder.rows(max_weight=float(config.max_weight), clip_norm=config.clip_norm)
    folded = fold_rows(
        [rows], k, strategy, min_row_users=config.min_row_users, state=state,
        rng=rng if rng is not None else np.random.default_rng(),
        total_weight=None if per_row else builder.weight,
    )  # fmt: skip
    summary.update(
        status=RoundStatus.PUBLISHED, rows_updated=len(folded.step.names),
        rows_withheld=folded.rows_withheld, **norm_summary(builder.norms, config.clip_norm),
    )  # fmt: skip
    new = apply_update(base, folded.step, version=version, meta={**base.meta, "round": summary})
    shares = user_shares(changes, builder.table.names, folded.shares)
    return PairsRound(new, folded.state, summary, shares)


def fold_and_rebase(
    base: Base,
    deltas: MutableMapping[str, Delta],
    events: Mapping[str, int],
    before: Mapping[str, Delta],
    config: AggregationConfig,
    *,
    version: str,
    state: RowUpdate | None = None,
    rng: np.random.Generator | None = None,
    per_row: bool = True,
) -> tuple[Base | None, RowUpdate | None, dict[str, Any]]:
    """A round in memory over the users of ``events`` (their events since ``before``, their
    deltas at their last contribution), then, if it published, every contributor's delta in
    ``deltas`` rebased on the new base, as the service's promotion does (``jobs``/``run``).
    Returns what :func:`fold_pairs` returns."""
    users = [u for u in events if u in deltas]
    done = fold_pairs_round(
        base, [(deltas[u], before.get(u), events[u]) for u in users], config, version=version,
        state=state, rng=rng, per_row=per_row,
    )  # fmt: skip
    if done.base is not None:
        for i, share in done.shares.items():
            deltas[users[i]] = rebase(deltas[users[i]], share)
    return done.base, done.state, done.summary
