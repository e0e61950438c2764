"""Replay reproduces production: the event log, re-run through the trainer's own apply code.

Every line of the event log (``fedlearn.data.eventlog``) holds the event, the features it was
trained on, the base version and the prediction the service made before learning; the lines
of one committed batch share a ``log_id``. :func:`reproduce` feeds the same batches, in the
same order per shard, from the same base versions and starting deltas, to
``fedlearn.trainer.apply.apply_batch`` (the function the trainer runs) with the service's clone
settings, and compares its predictions with the logged ones. A difference beyond ``tol`` means
what we measure offline is not what the service did: the figures of a replay would not
describe the product. The recorded features are handed to the apply code as the features of a
recorded prediction, so it trains on exactly what the service trained on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedlearn.data.eventlog import read_log
from fedlearn.model import Base, Delta
from fedlearn.model.table import DeltaTable
from fedlearn.store.entries import Entry
from fedlearn.trainer.apply import CloneSettings, UserState, apply_batch

_RECORDED = "replay:"  # prefix of the prediction ids that hand each event its logged features


@dataclass
class Reproduction:
    """How far the re-run predictions are from the logged ones."""

    events: int = 0
    batches: int = 0
    max_abs_diff: float = 0.0
    worst_event: str | None = None
    over_tol: int = 0
    tol: float = 1e-6
    by_base: dict[str, int] = field(default_factory=dict)

    @property
    def reproduced(self) -> bool:
        return self.events > 0 and self.over_tol == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events, "batches": self.batches, "max_abs_diff": self.max_abs_diff,
            "worst_event": self.worst_event, "over_tol": self.over_tol, "tol": self.tol,
            "reproduced": self.reproduced, "by_base": self.by_base,
        }  # fmt: skip


def batches(records: Iterable[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    """Consecutive records of one ``log_id`` (one committed batch), in log order."""
    batch: list[Mapping[str, Any]] = []
    for record in records:
        if batch and record.get("log_id") != batch[0].get("log_id"):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


def reproduce(
    eventlog: str | os.PathLike[str],
    base_of: Callable[[str], Base],
    settings: CloneSettings,
    *,
    start: Mapping[str, Delta] | None = None,
    tol: float = 1e-6,
) -> Reproduction:
    """Re-run the event log in ``eventlog`` through ``apply_batch``; ``base_of(version)`` gives
    each base version, ``start`` each user's delta before the log's first line (default: none,
    a service that starts with the log). Raises ``ValueError`` naming a record that lacks a
    field the reproduction needs."""
    folder = Path(eventlog)
    if not folder.is_dir():
        raise ValueError(f"event log folder {str(folder)!r} does not exist")
    out = Reproduction(tol=tol)
    states: dict[str, UserState] = {}
    table: DeltaTable | None = None
    bases: dict[str, Base] = {}
    for batch in batches(read_log(folder)):
        version = str(batch[0].get("base_version"))
        if version not in bases:
            bases[version] = base_of(version)
        base = bases[version]
        if table is None:
            table = DeltaTable(base.n_factors)
        entries, recorded, logged = _entries(batch, out.events)
        for entry in entries:
            user = entry.event["user"]
            if user not in states:
                states[user] = UserState()
                table.put(user, (start or {}).get(user) or Delta(base.n_factors))
        applied = apply_batch(
            base, table, states, entries, settings, item_features=lambda _item: None,
            prediction_features=recorded.get_for,
            applied_at=float(batch[0].get("applied_at") or 0.0),
        )  # fmt: skip
        states.update(applied.users)
        if applied.applied != len(entries):
            raise ValueError(
                f"batch {batch[0].get('log_id')!r}: {len(entries)} logged events but "
                f"{applied.applied} applied on replay (an event id out of order?)"
            )
        diff = np.abs(applied.predictions - logged)
        worst = int(np.argmax(diff))
        if diff[worst] > out.max_abs_diff:
            out.max_abs_diff = float(diff[worst])
            out.worst_event = str(entries[worst].event.get("event_id"))
        out.over_tol += int((diff > tol).sum())
        out.events += len(entries)
        out.batches += 1
        out.by_base[version] = out.by_base.get(version, 0) + len(entries)
    return out


class _Recorded(dict[str, dict[str, float]]):
    """Logged features by the prediction id given to their event, as the apply code asks."""

    def get_for(self, prediction_id: str, _item: str) -> dict[str, float] | None:
        return self.get(prediction_id)


def _entries(
    batch: list[Mapping[str, Any]], offset: int
) -> tuple[list[Entry], _Recorded, np.ndarray]:
    entries, recorded, logged = [], _Recorded(), []
    for i, record in enumerate(batch):
        missing = [k for k in ("user", "signal", "features", "prediction", "stream_id")
                   if k not in record]  # fmt: skip
        if missing:
            raise ValueError(
                f"event log record {offset + i} (log_id {record.get('log_id')!r}) lacks "
                f"{missing}; it was not written by this version's trainer"
            )
        pid = f"{_RECORDED}{offset + i}"
        event = {**record, "prediction_id": pid}
        entries.append(Entry(str(record["stream_id"]), event))
        recorded[pid] = dict(record["features"])
        logged.append(float(record["prediction"]))
    return entries, recorded, np.asarray(logged)
