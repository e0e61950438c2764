"""Drift in the replay: the events the trainers' detectors would have raised, and when, and
rounds started early by them.

:class:`DriftRoundsArm` is the service's loop in events instead of seconds: clones learn
test-then-train in batches (``learn_many_shadow``, the trainer's call, scoring the base in
shadow), every batch's signals go to the trainers' own :class:`DriftDetectors`, and the
clones' changes are folded into the base (the service's fold, through
:class:`AggregatedClonesArm`) on a schedule of ``round_every`` events and, with
``early_rounds``, early when drift is found (at most one early round per ``min_gap`` events,
as ``drift_early_round_min_s`` bounds the service's). The replay has no shards: its detectors
watch the whole stream, like a trainer's ``shard=None`` detectors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlearn.evaluate.arms import AggregatedClonesArm, LabelledEvent
from fedlearn.model import Base, Delta
from fedlearn.store.drift import DriftEvent
from fedlearn.trainer.apply import CloneSettings, learn_clones
from fedlearn.trainer.drift import DriftDetectors, DriftSettings, batch_signals


@dataclass(frozen=True)
class ReplayDrift:
    """A drift event of the replay: at live event ``index`` (the end of its batch)."""

    index: int
    ts: float
    event: DriftEvent
    early_round: bool = False

    def to_dict(self) -> dict[str, Any]:
        e = self.event
        return {"index": self.index, "ts": self.ts, "signal": e.signal, "before": e.before,
                "after": e.after, "early_round": self.early_round}  # fmt: skip


class DriftRoundsArm(AggregatedClonesArm):
    """Clones with scheduled rounds, drift detection and, optionally, early rounds."""

    def __init__(
        self,
        base: Base,
        *,
        round_every: int,
        early_rounds: bool = False,
        min_gap: int = 0,
        drift: DriftSettings | None = None,
        name: str = "clones-drift",
        **kw: Any,
    ) -> None:
        super().__init__(base, name=name, **kw)
        self.round_every, self.early_rounds, self.min_gap = round_every, early_rounds, min_gap
        self.detectors = DriftDetectors(drift)
        self.found: list[ReplayDrift] = []
        self.seen = 0  # live events processed
        self.ts: Sequence[float] | None = None  # the live events' times, for the report
        self._since_round = 0
        self._last_early = -(10**18)
        self._before: dict[str, Delta | None] = {}
        self._users: Counter[str] = Counter()

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        for user, _, _ in block:
            if user not in self._before:
                delta = self.deltas.get(user)
                self._before[user] = None if delta is None else delta.copy()
        self._users.update(user for user, _, _ in block)
        clone, base_p, _ = learn_clones(self.base, self.deltas, block, self.settings)
        labels = np.fromiter((y for _, _, y in block), np.float64, len(block))
        signals = batch_signals(labels, clone, base_p, [x for _, x, _ in block], self.base)
        found = self.detectors.observe(None, signals)
        self.seen += len(block)
        self._since_round += len(block)
        early = bool(found) and self.early_rounds and self.seen - self._last_early >= self.min_gap
        ts = float(self.ts[self.seen - 1]) if self.ts is not None else float("nan")
        self.found += [ReplayDrift(self.seen, ts, event, early) for event in found]
        if early:
            self._last_early = self.seen
        if early or self._since_round >= self.round_every:
            self._fold({u: d for u, d in self._before.items() if d is not None}, self._users)
            self._before, self._users, self._since_round = {}, Counter(), 0
        return clone


def replay_drift(
    live: Sequence[LabelledEvent],
    ts: np.ndarray,
    base: Base,
    *,
    settings: CloneSettings,
    round_every: int,
    batch: int = 1000,
) -> list[ReplayDrift]:
    """The drift events the service's detectors would have raised on ``live`` (scheduled
    rounds every ``round_every`` events, batches of ``batch`` as a trainer reads them)."""
    arm = DriftRoundsArm(base, round_every=round_every, settings=settings)
    arm.ts = ts
    for start in range(0, len(live), batch):
        arm.process(live[start : start + batch])
    return arm.found
