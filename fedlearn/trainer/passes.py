"""A pass's batches of several shards applied as one: which batches go together, and each
shard's part of what ``apply_batch`` returned.

A trainer that keeps up finds a few events in each of many shards. Applied shard by shard,
each batch pays ``apply_batch``'s fixed cost (a few dozen numpy calls); applied together, on
the trainer's one table, the pass pays it once. A user's events all live in their shard, so
the batches' entries concatenated keep every user's order, which is all test-then-train and
exactly-once need; the commits stay per shard (``Streams.commit_batches``), so each shard's
part of the result is cut out here. Batches with ``forget`` or ``rebase`` entries are applied
alone: their bookkeeping (erasures, rebase notes) stays per shard as it always was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedlearn.serving.ingest import FORGET, REBASE
from fedlearn.store import Batch
from fedlearn.trainer.apply import AppliedBatch

_CONTROL = frozenset({FORGET, REBASE})
_PER_EVENT = ("labels", "predictions", "base_predictions", "served_predictions", "positions")


def groups(batches: Mapping[int, Batch]) -> list[list[int]]:
    """The shards whose batches are applied together (events only: one group), then each
    shard whose batch holds a ``forget`` or ``rebase`` entry, alone."""
    together, alone = [], []
    for shard, batch in batches.items():
        if any(entry.event.get("type") in _CONTROL for entry in batch.entries):
            alone.append([shard])
        else:
            together.append(shard)
    return ([together] if together else []) + alone


def recorded_in(
    records: Mapping[int, Mapping[tuple[str, str], dict[str, Any]]], batches: Mapping[int, Batch]
) -> Mapping[tuple[str, str], dict[str, Any]]:
    """The ranking records found for ``batches``' shards (shard -> (prediction_id, item) ->
    record) as one lookup. An id that events of several shards name is left out, as the
    store leaves out an id that several users of one shard name: ``apply_batch`` looks a
    record up by id and item alone, so its owner's record would otherwise reach the others'
    events (which then train on their own features)."""
    if len(batches) == 1:
        return records.get(next(iter(batches)), {})
    named: dict[str, int] = {}
    for batch in batches.values():
        for pid in set(batch.prediction_ids or ()):
            if pid:
                named[pid] = named.get(pid, 0) + 1
    return {
        key: record
        for shard in batches
        for key, record in records.get(shard, {}).items()
        if named.get(key[0]) == 1
    }


def split(result: AppliedBatch, batches: Mapping[int, Batch]) -> dict[int, AppliedBatch]:
    """Each shard's part of ``result``, the outcome of ``batches``' entries applied together
    (no ``forget`` or ``rebase`` among them): its users, its events' log lines and figures
    in their order, and the entries it skipped (redeliveries)."""
    if len(batches) == 1:
        return dict.fromkeys(batches, result)
    shard_of = {user: shard for shard, batch in batches.items() for user in batch.users}
    events = result.log.get("events", [])
    of_event = np.fromiter((shard_of[e["user"]] for e in events), np.int64, len(events))
    parts = {}
    for shard, batch in batches.items():
        at = np.flatnonzero(of_event == shard)
        picked = at.tolist()
        part = AppliedBatch(
            users={u: s for u, s in result.users.items() if shard_of[u] == shard},
            log={
                key: [column[i] for i in picked] if isinstance(column, list) else column
                for key, column in result.log.items()
            },
            applied=len(picked),
            skipped=len(batch.entries) - len(picked),
            reset=[user for user in result.reset if shard_of[user] == shard],
        )
        for name in _PER_EVENT:
            setattr(part, name, getattr(result, name)[at])
        parts[shard] = part
    return parts
