"""Shadow evaluation: a candidate base is scored beside the current one before it is promoted.

Both are scored on the most recent events of the durable event log (``fedlearn.data.eventlog``:
each record carries the features the event was trained on and its signal), by time, with the
same code that serves a user who has no delta (``Clone(base)``). The candidate is promoted only
if its log loss is not worse than the current base's by more than ``margin`` (nats); AUC and
gAUC are reported beside it. A round's candidate never saw these events in batch (it is the
current base plus the users' aggregated changes); the monthly retrain holds them out of its
training set (:func:`holdout`), so the check always scores on events the candidate was not
trained on. No event log, or none yet: nothing to score on, and the check says so rather than
blocking every promotion of a fresh service.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedlearn.data.eventlog import records
from fedlearn.model import Base, Clone
from fedlearn.model.metrics import group_auc, log_loss, roc_auc


@dataclass(frozen=True, slots=True)
class Holdout:
    """The recent events a shadow check scores on: users, feature dicts, labels."""

    users: list[str] = field(default_factory=list)
    features: list[dict[str, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def _usable(records: Iterator[Mapping[str, Any]]) -> Iterator[tuple[float, int, Mapping]]:
    for i, record in enumerate(records):
        features, signal, ts = record.get("features"), record.get("signal"), record.get("ts")
        labelled = isinstance(features, dict) and features and signal in ("click", "skip")
        if labelled and isinstance(ts, int | float) and math.isfinite(ts):
            yield float(ts), i, record


def _latest_records(folder: Path, n_events: int) -> Iterator[Mapping[str, Any]]:
    """Each shard's newest day files, newest first, until they hold ``n_events`` lines: a
    round reads the log's tail, not the whole month."""
    for shard in sorted(folder.glob("shard=*")):
        chosen, lines = [], 0
        for path in sorted(shard.glob("*.jsonl"), reverse=True):
            chosen.append(path)
            with path.open("rb") as handle:
                lines += sum(1 for _ in handle)
            if lines >= n_events:
                break
        for path in reversed(chosen):
            yield from records(path)


def holdout(folder: str | Path | None, n_events: int) -> Holdout:
    """The ``n_events`` most recent (by ``ts``; log order breaks ties) usable records of the
    event log in ``folder``; empty when there is no folder or ``n_events`` is 0."""
    if folder is None or n_events <= 0 or not Path(folder).is_dir():
        return Holdout()
    tail = _latest_records(Path(folder), n_events)
    latest = heapq.nlargest(n_events, _usable(tail), key=lambda t: (t[0], t[1]))
    latest.reverse()
    return Holdout(
        users=[str(r.get("user", "")) for _, _, r in latest],
        features=[dict(r["features"]) for _, _, r in latest],
        labels=[1 if r["signal"] == "click" else 0 for _, _, r in latest],
    )


def _figures(base: Base, events: Holdout) -> dict[str, float | str | None]:
    p = Clone(base).predict_proba_many(events.features)
    y = np.asarray(events.labels)
    figures = {
        "log_loss": log_loss(y, p),
        "auc": roc_auc(y, p),
        "gauc": group_auc(np.asarray(events.users), y, p),
    }
    # JSON has no NaN: an undefined AUC (one class only) is reported as null
    return {"version": base.version} | {
        k: (None if not math.isfinite(v) else round(v, 6)) for k, v in figures.items()
    }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the shadow check decided, with both bases' figures."""

    promote: bool
    reason: str
    figures: dict[str, Any]


def shadow_check(candidate: Base, current: Base | None, events: Holdout, margin: float) -> Verdict:
    """Score ``candidate`` beside ``current`` on ``events``; promote unless its log loss is
    worse by more than ``margin``. A candidate with no current base, or no events to score
    on, is promoted (there is nothing to compare with), and the figures say why."""
    figures: dict[str, Any] = {"events": len(events), "margin": margin}
    if current is None or not len(events):
        why = "no current base" if current is None else "no recent events in the event log"
        return Verdict(True, f"not scored: {why}", {**figures, "scored": False})
    mine, theirs = _figures(candidate, events), _figures(current, events)
    figures.update(scored=True, candidate=mine, current=theirs)
    worse_by = float(mine["log_loss"]) - float(theirs["log_loss"])  # type: ignore[arg-type]
    figures["worse_by"] = round(worse_by, 6)
    if math.isfinite(worse_by) and worse_by <= margin:
        return Verdict(True, "promoted: not worse than the current base by more than the margin",
                       figures)  # fmt: skip
    reason = (
        f"shadow check: candidate {candidate.version} has log loss {mine['log_loss']} (AUC "
        f"{mine['auc']}, gAUC {mine['gauc']}) on the {len(events)} most recent events, current "
        f"base {current.version} has {theirs['log_loss']} (AUC {theirs['auc']}, gAUC "
        f"{theirs['gauc']}): worse by {worse_by:.6f} > margin {margin}; base {current.version} "
        f"stays current"
    )
    return Verdict(False, reason, figures)


def shadow_refusal(
    candidate: Base,
    current: Base | None,
    folder: str | Path | None,
    *,
    n_events: int,
    margin: float,
    summary: dict[str, Any],
) -> str | None:
    """The one call before a promotion: run the check, record its figures in ``summary``
    (``summary["shadow"]``) and return why the candidate is refused (``None``: promote)."""
    verdict = shadow_check(candidate, current, holdout(folder, n_events), margin)
    summary["shadow"] = {**verdict.figures, "promote": verdict.promote, "reason": verdict.reason}
    return None if verdict.promote else verdict.reason
